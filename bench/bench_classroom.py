"""A classroom's load: many students' FIM requests at once, on our engine and on vLLM.

Three servers of the same tiny model (head_dim 32, float32), one at a time:
- ours:  `codestral-engine serve` (one request at a time), Mistral's FIM route;
- vllm:  a real vLLM (continuous batching), FIM as Codestral token ids (protocol "vllm");
- route: the same vLLM reached through our Jupyter route (`POST /codestral/complete` of a real
         Jupyter server whose environment says protocol "vllm"), as JupyterLab reaches it.
For 1, 8 and 32 concurrent clients, each request has a ~1,900-token prompt that differs from
every other one at its start (different students' notebooks: no prompt-cache reuse), asks for 32
tokens greedily and streams. Reported: requests/s, p50/p95 time to first text and latency.
Usage: python bench/bench_classroom.py [--clients 1,8,32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from codestral_engine import codestral_tokenizer
from jupyter_codestral.client.engine_client import AsyncEngineClient
from jupyter_codestral.client.shapes import Sampling
from tests.helpers import TOKEN, start_server
from tests.lab_session import LAB_TOKEN, start_lab
from tests.vllm_server import SERVED_NAME, classroom_env, start_vllm, tiny_model

TOKENS = 32
CONTEXT_TOKENS = 2600  # the route's budget: room for the whole ~1,900-token prompt
BODY = "".join(
    f"def metric_{i}(frame):\n    return frame['col_{i}'].mean() * {i}\n\n" for i in range(72)
)


def cell(student: int) -> tuple[str, str]:
    """One student's cell: prefix and suffix of ~1,900 tokens, unique from the first line."""
    return f"# student {student}: {student * 7919 % 10007}\n" + BODY + "total = ", "\n"


class Timer:
    def __init__(self):
        self.sent = time.perf_counter()
        self.first: float | None = None

    def text(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()


async def direct(client: AsyncEngineClient, model: str, student: int) -> tuple[float, float]:
    timer = Timer()
    params = Sampling(max_tokens=TOKENS, temperature=0)
    async for piece in client.fim(*cell(student), model, params):
        if piece.text:
            timer.text()
    return timer.first - timer.sent, time.perf_counter() - timer.sent


async def via_route(http: httpx.AsyncClient, student: int) -> tuple[float, float]:
    prefix, suffix = cell(student)
    body = {
        "cells": [{"cell_type": "code", "source": prefix + suffix}],
        "cell": 0, "cursor": len(prefix), "max_tokens": TOKENS, "temperature": 0,
        "multiline": True, "time_budget_ms": 0, "context_tokens": CONTEXT_TOKENS,
    }  # fmt: skip
    timer = Timer()
    async with http.stream("POST", "/codestral/complete", json=body) as answer:
        async for line in answer.aiter_lines():
            event = json.loads(line) if line.strip() else {}
            if event.get("type") == "delta" and event["text"]:
                timer.text()
            elif event.get("type") == "error":
                raise RuntimeError(event["error"])
    return timer.first - timer.sent, time.perf_counter() - timer.sent


async def load(send, clients: int, rounds: int, first_student: int) -> dict:
    """`clients` concurrent students, each sending `rounds` requests back to back."""

    async def student(i: int) -> list[tuple[float, float]]:
        return [await send(first_student + i * rounds + r) for r in range(rounds)]

    start = time.perf_counter()
    results = [t for ts in await asyncio.gather(*(student(i) for i in range(clients))) for t in ts]
    wall = time.perf_counter() - start
    ttft = sorted(r[0] for r in results)
    latency = sorted(r[1] for r in results)

    def p95(values):
        return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]

    return {
        "requests": len(results),
        "rps": len(results) / wall,
        "ttft_p50": statistics.median(ttft),
        "ttft_p95": p95(ttft),
        "lat_p50": statistics.median(latency),
        "lat_p95": p95(latency),
    }


async def run_levels(make_send, levels: list[int], rounds: int) -> dict[int, dict]:
    send, close = await make_send()
    try:
        await send(10**6)  # warm-up (compilation, first allocations)
        out, student = {}, 0
        for clients in levels:
            out[clients] = await load(send, clients, rounds, student)
            student += clients * rounds
        return out
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    print(f"prompt: {len(codestral_tokenizer().encode_fim(*cell(0)))} tokens, {TOKENS} generated")
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = tiny_model(root)

        (root / "ours").mkdir()
        engine = start_server(
            model, root / "ours", "--token", TOKEN, "--backend", "torch", log=root / "engine.log"
        )

        async def ours():
            client = AsyncEngineClient(engine.url, TOKEN)
            return (lambda s: direct(client, "codestral-latest", s)), client.aclose

        try:
            results["ours"] = asyncio.run(run_levels(ours, levels, args.rounds))
        finally:
            engine.proc.send_signal(signal.SIGTERM)
            engine.proc.wait(timeout=30)

        vllm_run = start_vllm(model, root / "vllm.log")
        vllm = next(vllm_run)
        try:

            async def straight():
                client = AsyncEngineClient(vllm.url, vllm.key, protocol_name="vllm")
                return (lambda s: direct(client, SERVED_NAME, s)), client.aclose

            results["vllm"] = asyncio.run(run_levels(straight, levels, args.rounds))
            (root / "lab" / "runtime").mkdir(parents=True)
            (root / "lab" / "work").mkdir()
            lab, url = start_lab(
                root / "lab",
                root / "lab" / "runtime",
                root / "lab" / "work",
                {},
                extra_env=classroom_env(vllm),
            )
            try:

                async def route():
                    http = httpx.AsyncClient(
                        base_url=url,
                        timeout=None,
                        headers={"Authorization": f"token {LAB_TOKEN}"},
                    )
                    return (lambda s: via_route(http, s)), http.aclose

                results["route"] = asyncio.run(run_levels(route, levels, args.rounds))
            finally:
                lab.send_signal(signal.SIGTERM)
                lab.wait(timeout=30)
        finally:
            next(vllm_run, None)

    print(f"\n{platform.platform()}, {os.cpu_count()} CPUs")
    print("| server | clients | requests | req/s | TTFT p50 / p95 (ms) | latency p50 / p95 (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, by_level in results.items():
        for clients, r in by_level.items():
            print(
                f"| {name} | {clients} | {r['requests']} | {r['rps']:.2f} | "
                f"{r['ttft_p50'] * 1000:.0f} / {r['ttft_p95'] * 1000:.0f} | "
                f"{r['lat_p50'] * 1000:.0f} / {r['lat_p95'] * 1000:.0f} |"
            )
    for clients in levels:
        added = results["route"][clients]["ttft_p50"] - results["vllm"][clients]["ttft_p50"]
        ratio = results["vllm"][clients]["rps"] / results["ours"][clients]["rps"]
        print(
            f"{clients} clients: route adds {added * 1000:+.1f} ms p50 TTFT over vLLM direct; "
            f"vLLM serves {ratio:.2f}x our engine's requests/s"
        )


if __name__ == "__main__":
    main()
