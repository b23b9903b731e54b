"""The engine server under real clients: a 50-client load with random disconnects, then a
1,000-request soak, on the tiny model. Counted: answered, cancelled (the client left),
refused (429), errors (any other status, or a broken stream); the server's RSS over time.

`--engine-src DIR` runs the server from another checkout's `engine/` (e.g. a `git worktree`
of an older commit), to compare before and after with the same clients.
Usage: python bench/bench_load.py [--clients 50] [--seconds 30] [--soak 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from codestral_engine.weights.tiny import make_tiny
from tests.helpers import start_server

TOKEN = "bench-token"


def start(model: Path, runtime: Path, engine_src: Path | None) -> tuple[subprocess.Popen, str]:
    env = {"PYTHONPATH": str(engine_src)} if engine_src else {}
    server = start_server(
        model,
        runtime,
        "--token",
        TOKEN,
        "--backend",
        "torch",
        extra_env=env,
        log=runtime / "engine.log",
    )
    return server.proc, server.url


def refused(response: httpx.Response) -> str:
    """A 429: wait as told (at most 1 s), as real clients back off, then report it."""
    time.sleep(min(1.0, float(response.headers.get("Retry-After", "1"))))
    return "refused"


def one_request(http: httpx.Client, rng: random.Random) -> str:
    """A random client: FIM or chat, streamed or not, sometimes leaving early."""
    chat = rng.random() < 0.2
    body = {"model": "codestral-latest", "max_tokens": rng.randint(4, 64)}
    if chat:
        body["messages"] = [{"role": "user", "content": f"question {rng.random()}"}]
    else:
        body |= {"prompt": f"v_{rng.randint(0, 10**6)} = ", "suffix": "\n"}
    path = "/v1/chat/completions" if chat else "/v1/fim/completions"
    leave = rng.random() < 0.3
    try:
        if rng.random() < 0.7:
            with http.stream("POST", path, json=body | {"stream": True}) as response:
                if response.status_code != 200:
                    return refused(response) if response.status_code == 429 else "error"
                for i, _line in enumerate(response.iter_lines()):
                    if leave and i > 2:
                        return "cancelled"
            return "answered"
        response = http.post(path, json=body, timeout=0.2 if leave else 120)
        if response.status_code != 200:
            return refused(response) if response.status_code == 429 else "error"
        return "answered"
    except httpx.ReadTimeout:
        return "cancelled" if leave else "error"
    except httpx.TransportError:
        return "error"


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def load(url: str, pid: int, clients: int, seconds: float) -> tuple[Counter, list[int]]:
    outcomes: Counter = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    memory = [rss(pid)]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            while time.monotonic() < deadline:
                outcome = one_request(http, rng)
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(seconds / 5)
        memory.append(rss(pid))
    return outcomes, memory


def soak(url: str, pid: int, requests: int) -> tuple[Counter, list[int]]:
    outcomes: Counter = Counter()
    rng = random.Random(7)
    memory = [rss(pid)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        for i in range(1, requests + 1):
            outcomes[one_request(http, rng)] += 1
            if i % (requests // 4) == 0:
                memory.append(rss(pid))
    return outcomes, memory


def abandoned(url: str) -> float:
    """The issue's case: a non-streaming request without max_tokens whose client leaves after
    0.5 s, then a 4-token FIM; returns the seconds that FIM waited."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"model": "codestral-latest", "prompt": "while True:\n"}
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(url + "/v1/fim/completions", json=body, headers=headers, timeout=0.5)
    start = time.perf_counter()
    small = {"model": "codestral-latest", "prompt": "x = ", "max_tokens": 4}
    httpx.post(url + "/v1/fim/completions", json=small, headers=headers, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--soak", type=int, default=1000)
    parser.add_argument("--engine-src", type=Path, help="another checkout's engine/ directory")
    parser.add_argument("--only-abandoned", action="store_true", help="only the abandoned case")
    args = parser.parse_args()
    if args.only_abandoned:
        with tempfile.TemporaryDirectory() as tmp:
            model = make_tiny(Path(tmp) / "model", "hf", seed=0)
            proc, url = start(model, Path(tmp), args.engine_src)
            try:
                waited = abandoned(url)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        print(
            f"engine from {args.engine_src or 'here'}: a 4-token FIM after an abandoned "
            f"non-streaming request without max_tokens waited {waited:.2f} s"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "model", "hf", seed=0)
        proc, url = start(model, Path(tmp), args.engine_src)
        try:
            loaded, load_memory = load(url, proc.pid, args.clients, args.seconds)
            drained = httpx.get(
                url + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
            ).json()
            soaked, soak_memory = soak(url, proc.pid, args.soak)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    mb = [f"{m / 1e6:.0f}" for m in load_memory]
    print(f"{platform.platform()}, {os.cpu_count()} CPUs; engine from {args.engine_src or 'here'}")
    print(
        f"load: {args.clients} clients for {args.seconds:.0f} s: {dict(loaded)}; "
        f"queue afterwards {drained['queue_length']}; RSS MB {' '.join(mb)}"
    )
    print(
        f"soak: {args.soak} requests: {dict(soaked)}; "
        f"RSS MB {' '.join(f'{m / 1e6:.0f}' for m in soak_memory)}"
    )


if __name__ == "__main__":
    main()
