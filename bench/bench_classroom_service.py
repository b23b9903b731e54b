"""The classroom service's cost and its fairness, in a real JupyterHub on loopback.

Upstream: our `codestral-engine serve` on a tiny Codestral-architecture model (one request at a
time). The service: `configure_hub` in a real hub (tests/test_classroom_hub.py's Hub), students
with their own hub tokens. Measured where a student's client receives text (streamed FIM):
1. time to first token, p50/p95, straight to the upstream vs through the service, for 1 and 16
   concurrent students (each sends `--rounds` requests back to back);
2. one student flooding 8 concurrent requests in a loop (64 tokens each; a refused request is
   retried after 0.1 s, ignoring Retry-After) while another types (16-token requests one after
   another): the typist's time to first token straight to the upstream (no fairness) vs through
   the service (its fair share).
Every prompt differs from every other from its first line (no prompt-cache reuse).
Usage: python bench/bench_classroom_service.py [--rounds 5] [--typed 20] [--slots 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from httpx_sse import aconnect_sse

from codestral_engine.weights.tiny import make_tiny
from jupyter_codestral.client.protocol import stream_chunk
from jupyter_codestral.client.shapes import piece
from tests import test_classroom_hub as hub_test
from tests.helpers import start_server, wait_until

MODEL = "codestral-latest"
REQUESTS = itertools.count()
PROMPT = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(20))


async def ttft(http: httpx.AsyncClient, url: str, key: str, student: int, tokens: int) -> float:
    """Seconds to the first text of one streamed FIM request; raises on a refusal."""
    # Unique from the first line: no request reuses another's prompt cache.
    opening = f"# student {student}, request {next(REQUESTS)}\n"
    body = {"model": MODEL, "prompt": f"{opening}{PROMPT}def g(x):\n    return ",
            "suffix": "\n", "max_tokens": tokens, "min_tokens": tokens, "temperature": 0,
            "stream": True}  # fmt: skip
    sent = time.perf_counter()
    first = None
    headers = {"Authorization": f"Bearer {key}"}
    async with aconnect_sse(
        http, "POST", f"{url}/v1/fim/completions", json=body, headers=headers
    ) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            raise Refused(source.response.status_code)
        async for event in source.aiter_sse():
            chunk = stream_chunk(event.data)
            if chunk is None:
                break
            if first is None and piece(chunk).text:
                first = time.perf_counter()
    return (first or time.perf_counter()) - sent


class Refused(Exception):
    pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def concurrent(url: str, keys: list[str], rounds: int) -> list[float]:
    async with httpx.AsyncClient(timeout=300) as http:

        async def student(i: int) -> list[float]:
            return [await ttft(http, url, keys[i], i, 16) for _ in range(rounds)]

        runs = await asyncio.gather(*(student(i) for i in range(len(keys))))
    return [t for run in runs for t in run]


async def flood_and_type(url: str, flooder: str, typist: str, typed: int) -> tuple[list, int]:
    stop = asyncio.Event()
    refused = 0
    async with httpx.AsyncClient(timeout=300) as http:

        async def flood() -> None:
            nonlocal refused
            while not stop.is_set():
                try:
                    await ttft(http, url, flooder, 0, 64)
                except Refused:
                    refused += 1
                    await asyncio.sleep(0.1)

        workers = [asyncio.ensure_future(flood()) for _ in range(8)]
        await asyncio.sleep(1.0)  # the flood is going
        times = [await ttft(http, url, typist, 1, 16) for _ in range(typed)]
        stop.set()
        await asyncio.gather(*workers)
    return times, refused


def row(label: str, times: list[float]) -> str:
    return f"| {label} | {len(times)} | {pct(times, 0.5):,.0f} | {pct(times, 0.95):,.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--typed", type=int, default=20)
    parser.add_argument(
        "--slots",
        type=int,
        default=1,
        help="the service's upstream slots "
        "(1 for our one-request-at-a-time serve; vLLM batches: 8)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-classroom-"))
    model = make_tiny(tmp / "model", "mlx", seed=0)
    upstream = start_server(model, tmp / "runtime")
    hub_test.CONFIG = hub_test.CONFIG.replace("slots=4", f"slots={args.slots}")
    key_file = tmp / "class-key"
    key_file.write_text(upstream.token)
    (tmp / "hub").mkdir()
    hub = hub_test.Hub(tmp / "hub", upstream.url, key_file)
    try:
        wait_until(lambda: hub.alive() and hub_test._up(f"{hub.url}/hub/api/"), 90, 0.2)
        names = [f"student{i}" for i in range(16)]
        assert hub.api.post("users", json={"usernames": names}).status_code in (201, 409)
        keys = [hub.token(name) for name in names]
        wait_until(lambda: hub_test._up(f"{hub.service}/v1/models", keys[0]), 30, 0.2)
        asyncio.run(concurrent(hub.service, keys, 1))  # tokens checked once, then cached
        lines = [
            f"Recorded {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
            f"{platform.python_version()}; service slots {args.slots}, "
            f"{args.rounds} requests per student, 16 tokens streamed.",
            "",
            "| path | students | requests | TTFT p50 (ms) | TTFT p95 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for students in (1, 16):
            for label, url, k in (
                ("upstream", upstream.url, [upstream.token] * students),
                ("service", hub.service, keys[:students]),
            ):
                times = asyncio.run(concurrent(url, k, args.rounds))
                lines.append(row(f"{label} | {students}", times))
        lines += [
            "",
            "| typist, while another student floods 8 concurrent | requests | "
            "TTFT p50 (ms) | TTFT p95 (ms) | flood requests refused |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, url, flooder, typist in (
            (
                "straight to the upstream (no fairness)",
                upstream.url,
                upstream.token,
                upstream.token,
            ),
            ("through the service (fair share)", hub.service, keys[0], keys[1]),
        ):
            times, refused = asyncio.run(flood_and_type(url, flooder, typist, args.typed))
            lines.append(row(label, times) + f" {refused} |")
        print("\n".join(lines))
    finally:
        hub.stop()
        upstream.proc.terminate()
        upstream.proc.wait(30)


if __name__ == "__main__":
    main()
