"""What the HTTP API costs: the same FIM request in-process vs through `codestral-engine serve`.

Both sides run the same model directory and the same warm requests (the prompt is cached, one
new token at the cursor, as while typing), timed where the caller receives tokens: time to
first token, decode tokens/s, and the difference. The HTTP side streams SSE over loopback with
the project's own client. Usage: python bench/bench_api.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import codestral_engine
from codestral_engine import connection
from codestral_engine.core.events import TextDelta
from codestral_engine.weights.tiny import make_tiny
from jupyter_codestral.client.engine_client import EngineClient

PREFIX = "import numpy as np\n\n" + "def f_{i}(x):\n    return np.sqrt(x) + {i}\n\n" * 40
SUFFIX = "\n\nprint(total)\n"


def rate(times: list[float]) -> float | None:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None


def in_process(engine: codestral_engine.Engine, prefix: str, n: int) -> tuple[float, float]:
    start = time.perf_counter()
    arrivals = [
        time.perf_counter()
        for e in engine.fim(prefix, SUFFIX, max_tokens=n)
        if isinstance(e, TextDelta) and e.token_ids
    ]
    return arrivals[0] - start, rate(arrivals)


def over_http(client: EngineClient, prefix: str, n: int) -> tuple[float, float]:
    start = time.perf_counter()
    arrivals = [
        time.perf_counter()
        for piece in client.fim(prefix, SUFFIX, max_tokens=n, stream=True)
        if piece.text
    ]
    return arrivals[0] - start, rate(arrivals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--decode-tokens", type=int, default=64)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp())
    model = make_tiny(root / "tiny", "mlx")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "codestral_engine", "serve", "--model", str(model), "--token", "b"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.environ["JUPYTER_RUNTIME_DIR"] = env["JUPYTER_RUNTIME_DIR"]
        deadline = time.monotonic() + 120
        while connection.read_live() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the server writes its connection file once it listens
        client = EngineClient.local(start=False, progress=False)
        engine = codestral_engine.load(model)
        rows = {"in-process": [], "HTTP + SSE": []}
        for i in range(args.repeats):
            prefix = PREFIX.format(i=i) + f"total = f_{i}("
            for name, call, target in (
                ("in-process", in_process, engine),
                ("HTTP + SSE", over_http, client),
            ):
                call(target, prefix, 1)  # warm: the prompt is now cached on that side
                rows[name].append(call(target, prefix + "x", args.decode_tokens))
        engine.close()
    finally:
        server.terminate()
        server.wait()

    machine = f"{platform.platform()}, {platform.machine()}"
    print(f"Machine: {machine}; tiny model, {args.repeats} runs each\n")
    print("| path | time to first token (ms, median) | decode tokens/s (median) |")
    print("|---|---:|---:|")
    medians = {}
    for name, values in rows.items():
        ttft = statistics.median(v[0] for v in values) * 1000
        tps = statistics.median(v[1] for v in values)
        medians[name] = (ttft, tps)
        print(f"| {name} | {ttft:.2f} | {tps:.1f} |")
    overhead = medians["HTTP + SSE"][0] - medians["in-process"][0]
    ratio = medians["HTTP + SSE"][1] / medians["in-process"][1]
    print(
        f"\nAPI overhead on time to first token: {overhead:.2f} ms; decode rate ratio {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
