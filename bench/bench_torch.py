"""Our PyTorch backend vs Hugging Face transformers' `generate`, same model, same run.

A ~200M-parameter random model in Codestral's architecture (HF layout), one ~512-token FIM
prompt. Per side and dtype, in its own process (so peak memory is its own): cold time to first
token (empty caches, after a warm-up call), warm time to first token (the cached prompt plus a
few typed tokens; transformers keeps no cache across calls), decode tokens/s over 64 tokens, and
peak RSS. "int8" is ours with int8 weights against transformers in bfloat16.
Usage: python bench/bench_torch.py [--dtypes float32 bfloat16 int8]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_SHAPE = dict(
    hidden_size=1024,
    num_hidden_layers=12,
    intermediate_size=2816,
    num_attention_heads=16,
    num_key_value_heads=4,
    head_dim=64,
)
PREFIX = "import pandas as pd\n\n" + "".join(
    f"def feature_{i}(df):\n    return df['col_{i}'].rolling({i + 2}).mean()\n\n" for i in range(24)
)
SUFFIX = "\n\nprint(features.head())\n"
TYPED = "features = pd.concat([feature_0(df), feat"
DECODE = 64


class PeakRSS:
    """Samples this process's RSS on a thread: the lifetime peak would include import spikes."""

    def __init__(self) -> None:
        import psutil

        self._process, self.peak, self._done = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.02)  # sparse enough not to compete for the GIL

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def run_ours(model_dir: str, dtype: str) -> dict:
    quantize = None
    if dtype == "int8":  # int8 weights, bf16 activations
        dtype, quantize = "bfloat16", "int8"
    import torch

    import codestral_engine
    from codestral_engine.core.events import TextDelta

    peak = PeakRSS()
    # The same thread count as the transformers reference (torch's default), not our rule of
    # one core left free: a like-for-like comparison of the two implementations.
    engine = codestral_engine.load(
        model_dir, "torch", dtype=dtype, quantize=quantize, threads=torch.get_num_threads()
    )

    def timed(prefix: str, n: int) -> tuple[float, list[float]]:
        start, arrivals = time.perf_counter(), []
        for event in engine.fim(prefix, SUFFIX, max_tokens=n, min_tokens=n):
            if isinstance(event, TextDelta) and event.token_ids:
                arrivals.append(time.perf_counter())
        return arrivals[0] - start, arrivals

    timed("x = 1", 2)  # warm-up: first-call costs are not part of "cold"
    engine.prompt_cache.clear()
    cold, _ = timed(PREFIX, 1)
    warm, _ = timed(PREFIX + TYPED, 1)
    _, arrivals = timed(PREFIX, DECODE)
    engine.close()
    tps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return {"cold": cold, "warm": warm, "tps": tps, "peak": peak.stop()}


def run_transformers(model_dir: str, dtype: str) -> dict:
    dtype = "bfloat16" if dtype == "int8" else dtype  # compared with transformers' best
    import torch
    from mistral_common.protocol.fim.request import FIMRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from transformers import MistralForCausalLM

    peak = PeakRSS()
    model = MistralForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    tokenizer = MistralTokenizer.v3()

    def ids(prefix: str) -> torch.Tensor:
        return torch.tensor([tokenizer.encode_fim(FIMRequest(prompt=prefix, suffix=SUFFIX)).tokens])

    def generate(prefix: str, n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids(prefix), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    generate("x = 1", 2)  # warm-up
    cold = generate(PREFIX, 1)
    warm = generate(PREFIX + TYPED, 1)
    whole = generate(PREFIX, DECODE)
    return {"cold": cold, "warm": warm, "tps": (DECODE - 1) / (whole - cold), "peak": peak.stop()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8"])
    parser.add_argument("--side", choices=("ours", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one measurement, in this (fresh) process
        run = run_ours if args.side == "ours" else run_transformers
        print(json.dumps(run(args.model, args.dtypes[0])))
        return

    from codestral_engine.weights.tiny import TinyShape, make_tiny

    model_dir = make_tiny(Path(tempfile.mkdtemp()) / "bench", "hf", shape=TinyShape(**BENCH_SHAPE))
    params = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) // 4
    machine = f"{platform.platform()}, {platform.machine()}"
    print(f"Machine: {machine}; model ~{params / 1e6:.0f}M parameters\n")
    print(
        "| dtype | metric | ours (torch backend) | transformers generate | ours vs transformers |"
    )
    print("|---|---|---:|---:|---:|")
    for dtype in args.dtypes:
        results = {}
        for side in ("ours", "transformers"):
            command = [
                sys.executable,
                __file__,
                "--side",
                side,
                "--model",
                str(model_dir),
                "--dtypes",
                dtype,
            ]
            results[side] = json.loads(subprocess.check_output(command, stderr=subprocess.DEVNULL))
        ours, theirs = results["ours"], results["transformers"]
        rows = [
            ("cold time to first token (s)", "cold", "lower"),
            ("warm time to first token (s)", "warm", "lower"),
            ("decode tokens/s", "tps", "higher"),
            ("peak RSS (MB)", "peak", "lower"),
        ]
        for name, key, better in rows:
            a, b = ours[key], theirs[key]
            scale = 1e-6 if key == "peak" else 1
            ratio = b / a if better == "lower" else a / b
            print(f"| {dtype} | {name} | {a * scale:.4g} | {b * scale:.4g} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
