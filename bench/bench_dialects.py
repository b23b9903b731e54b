"""What each dialect adds: the same warm FIM through Mistral's route, Ollama's /api/generate and
llama.cpp's /infill on one `codestral-engine serve`.

The same prompt ids on every route (prefix + suffix, no extra chunks), warm (the prompt is
cached; one new character at the cursor, as while typing), the routes alternating within each
run. Two measures: time to the first streamed text (Mistral SSE vs Ollama NDJSON; /infill is
called without streaming by llama.vim and llama.vscode), and the round trip of a one-token
completion without streaming (all three). Usage: python bench/bench_dialects.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from codestral_engine.weights.tiny import make_tiny
from tests.helpers import start_server

PREFIX = "import numpy as np\n\n" + "def f_{i}(x):\n    return np.sqrt(x) + {i}\n\n" * 40
SUFFIX = "\n\nprint(total)\n"
TOKEN = "bench"


def first_text_ms(http: httpx.Client, path: str, body: dict, text_of) -> float:
    start = time.perf_counter()
    with http.stream("POST", path, json=body) as response:
        lines = response.iter_lines()
        for line in lines:
            if text_of(line):
                elapsed = time.perf_counter() - start
                break
        for _ in lines:  # read to the end: the next request starts clean
            pass
    return elapsed * 1000


def round_trip_ms(http: httpx.Client, path: str, body: dict) -> float:
    start = time.perf_counter()
    response = http.post(path, json=body)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return elapsed * 1000


def sse_text(line: str) -> str:
    if not line.startswith("data: {"):
        return ""
    return json.loads(line[6:])["choices"][0]["delta"].get("content") or ""


def ndjson_text(line: str) -> str:
    return json.loads(line).get("response", "") if line else ""


def bodies(prefix: str, n: int, stream: bool, turn: int = 0) -> dict[str, tuple[str, dict]]:
    """Each route's request, starting with a different route on each turn (no route is
    always first after the warm-up)."""
    routes = {
        "Mistral /v1/fim/completions": ("/v1/fim/completions", {
            "model": "codestral-latest", "prompt": prefix, "suffix": SUFFIX,
            "max_tokens": n, "stream": stream}),
        "Ollama /api/generate": ("/api/generate", {
            "model": "codestral", "prompt": prefix, "suffix": SUFFIX,
            "options": {"num_predict": n}, "stream": stream}),
        "llama.cpp /infill": ("/infill", {
            "input_prefix": prefix, "input_suffix": SUFFIX, "prompt": "",
            "n_predict": n, "stream": False}),
    }  # fmt: skip
    names = list(routes)
    return {name: routes[name] for name in names[turn % 3 :] + names[: turn % 3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp())
    model = make_tiny(root / "tiny", "mlx")
    runtime = root / "runtime"
    server = start_server(
        model, runtime, "--token", TOKEN, "--backend", args.backend, log=root / "engine.log"
    )
    try:
        url = server.url
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            streamed = {"Mistral /v1/fim/completions": [], "Ollama /api/generate": []}
            parsers = {"Mistral /v1/fim/completions": sse_text, "Ollama /api/generate": ndjson_text}
            whole: dict[str, list[float]] = {name: [] for name in bodies("", 1, False)}
            for i in range(args.repeats):
                prefix = PREFIX.format(i=i) + f"total = f_{i}("
                for path, body in bodies(prefix, 1, False).values():
                    round_trip_ms(http, path, body)  # warm: this prompt is now cached
                for name, (path, body) in bodies(prefix + "x", 8, True, i).items():
                    if name in streamed:
                        streamed[name].append(first_text_ms(http, path, body, parsers[name]))
                for name, (path, body) in bodies(prefix + "xy", 1, False, i).items():
                    whole[name].append(round_trip_ms(http, path, body))
    finally:
        server.proc.terminate()
        server.proc.wait()

    print(
        f"Machine: {platform.platform()}, {platform.machine()}; tiny model, "
        f"backend {args.backend}, {args.repeats} runs each\n"
    )
    print("| route | first streamed text (ms, p50) | one-token round trip (ms, p50) |")
    print("|---|---:|---:|")
    for name in bodies("", 1, False):
        first = f"{statistics.median(streamed[name]):.2f}" if name in streamed else "—"
        print(f"| {name} | {first} | {statistics.median(whole[name]):.2f} |")
    base_first = statistics.median(streamed["Mistral /v1/fim/completions"])
    base_whole = statistics.median(whole["Mistral /v1/fim/completions"])
    ollama_first = statistics.median(streamed["Ollama /api/generate"]) - base_first
    print(
        f"\nAdded vs the Mistral route: Ollama {ollama_first:+.2f} ms to the first text, "
        f"{statistics.median(whole['Ollama /api/generate']) - base_whole:+.2f} ms round trip; "
        f"/infill {statistics.median(whole['llama.cpp /infill']) - base_whole:+.2f} ms "
        "round trip"
    )


if __name__ == "__main__":
    main()
