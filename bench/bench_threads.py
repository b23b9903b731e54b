"""Torch CPU threads: decode speed with 1 thread, the default rule (physical cores but one) and
every physical core, on an idle machine and on a busy one (one process per busy core spinning,
as JupyterLab, Chromium and a running kernel keep a core or so busy on a laptop).

The model is a mid-size random-weight Codestral-architecture model (matrices large enough for
threads to matter). Each setting runs the same warm FIM requests (prompt cached, 64 new
tokens); decode tokens/s is reported as the median of --repeats runs with the min-max spread.
Usage: python bench/bench_threads.py [--repeats 5] [--busy-cores 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

import codestral_engine
from codestral_engine.backends.torch import cpu_threads
from codestral_engine.core.events import TextDelta
from codestral_engine.weights.tiny import TinyShape, make_tiny

SHAPE = TinyShape(
    hidden_size=768,
    num_hidden_layers=8,
    intermediate_size=2048,
    num_attention_heads=12,
    num_key_value_heads=4,
    head_dim=64,
)
PREFIX = "import numpy as np\n\n" + "".join(
    f"def f_{i}(x):\n    return np.sqrt(x) + {i}\n\n" for i in range(20)
)
TOKENS = 64


def spin() -> None:
    while True:
        pass


def decode_rate(engine: codestral_engine.Engine) -> float:
    arrivals = [
        time.perf_counter()
        for e in engine.fim(PREFIX, "\n", max_tokens=TOKENS, min_tokens=TOKENS, temperature=0)
        if isinstance(e, TextDelta) and e.token_ids
    ]
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def measure(model: Path, threads: int, repeats: int) -> list[float]:
    with codestral_engine.load(model, "torch", threads=threads) as engine:
        decode_rate(engine)  # warm: the prompt is cached from here on
        return [decode_rate(engine) for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy-cores", type=int, default=1)
    args = parser.parse_args()
    physical = psutil.cpu_count(logical=False) or 1
    choices = sorted({1, cpu_threads(), physical})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "model", "hf", seed=0, shape=SHAPE)
        for load in ("idle", "busy"):
            spinners = []
            if load == "busy":
                spinners = [
                    multiprocessing.Process(target=spin, daemon=True)
                    for _ in range(args.busy_cores)
                ]
                for p in spinners:
                    p.start()
            try:
                for threads in choices:
                    rates = measure(model, threads, args.repeats)
                    rows.append((load, threads, statistics.median(rates), min(rates), max(rates)))
            finally:
                for p in spinners:
                    p.terminate()
    print(
        f"{platform.platform()}, {physical} physical cores ({os.cpu_count()} logical); default "
        f"rule: {cpu_threads()} thread(s); busy = {args.busy_cores} spinning core(s)"
    )
    print("| machine | threads | decode tokens/s, median (min-max) |")
    print("|---|---:|---:|")
    for load, threads, median, low, high in rows:
        mark = " (default)" if threads == cpu_threads() else ""
        print(f"| {load} | {threads}{mark} | {median:.1f} ({low:.1f}-{high:.1f}) |")


if __name__ == "__main__":
    main()
