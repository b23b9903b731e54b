"""Our PyTorch backend vs Hugging Face transformers' `generate`, same model, same run.

A ~200M-parameter random model in Codestral's architecture (HF layout), one ~600-token FIM
prompt. Per side and dtype, in its own process (so peak memory is its own): cold time to first
token (empty caches, after a warm-up call), warm time to first token (the cached prompt plus a
few typed tokens; transformers keeps no cache across calls), decode tokens/s over 64 tokens, and
peak RSS. "int8" / "int4" are ours with int8 / int4 weights against transformers in
bfloat16. Ours runs with speculative decoding off, so both sides decode one token per pass (a
like-for-like comparison of the implementations); "speculative on" is ours with it on (the
default for float weights on the CPU), whose figure depends on how often a random model repeats
itself. This machine's speed
drifts between runs, so the sides alternate, round after round, and each row gives the median
and the range over rounds. A second table puts both sides in one process and measures them turn
about (`--alternate` rounds), which takes most of the drift out of the ratios.
Usage: python bench/bench_torch.py [--dtypes float32 bfloat16 int8 int4] [--rounds 3]
[--alternate 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
WARM_UP = PREFIX.replace("feature", "column")  # as long, but not a prefix to reuse
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


class Ours:
    """Our engine on the model, timed where tokens arrive."""

    def __init__(self, model_dir: str, dtype: str, **options) -> None:
        import torch

        import codestral_engine

        quantize = dtype if dtype in ("int8", "int4") else None  # bf16 activations
        # The same thread count as the transformers reference (torch's default), not our rule
        # of one core left free: a like-for-like comparison of the two implementations.
        self.engine = codestral_engine.load(
            model_dir,
            "torch",
            dtype="bfloat16" if quantize else dtype,
            quantize=quantize,
            threads=torch.get_num_threads(),
            **options,
        )
        self.timed(WARM_UP, 2)  # first-call costs (of any long prompt) are not "cold"

    def timed(self, prefix: str, n: int) -> tuple[float, float]:
        """(time to first token, decode tokens/s after it)."""
        from codestral_engine.core.events import TextDelta

        start, arrivals = time.perf_counter(), []
        for event in self.engine.fim(prefix, SUFFIX, max_tokens=n, min_tokens=n):
            if isinstance(event, TextDelta) and event.token_ids:
                arrivals.append(time.perf_counter())
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if n > 1 else 0.0
        return arrivals[0] - start, rate

    def cold(self) -> float:
        self.engine.prompt_cache.clear()
        return self.timed(PREFIX, 1)[0]

    def warm(self) -> float:  # after `cold`: the cached prompt plus a few typed tokens
        return self.timed(PREFIX + TYPED, 1)[0]

    def decode(self, speculative: bool = False) -> float:
        self.engine.speculative = speculative
        return self.timed(PREFIX, DECODE)[1]

    def close(self) -> None:
        self.engine.close()


class Transformers:
    """`MistralForCausalLM.generate` on the model (greedy), the same measurements."""

    def __init__(self, model_dir: str, dtype: str) -> None:
        import torch
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
        from transformers import MistralForCausalLM

        dtype = "bfloat16" if dtype in ("int8", "int4") else dtype  # against its best
        self.model = MistralForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        self.model.eval()
        self.tokenizer = MistralTokenizer.v3()
        self.generate(WARM_UP, 2)

    def generate(self, prefix: str, n: int, streamer=None) -> float:
        import torch
        from mistral_common.protocol.fim.request import FIMRequest

        request = FIMRequest(prompt=prefix, suffix=SUFFIX)
        ids = torch.tensor([self.tokenizer.encode_fim(request).tokens])
        start = time.perf_counter()
        with torch.no_grad():
            self.model.generate(
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer
            )
        return time.perf_counter() - start

    def cold(self) -> float:  # a streamer slows the prefill down: time the whole call
        return self.generate(PREFIX, 1)

    def warm(self) -> float:  # transformers keeps no cache across calls
        return self.generate(PREFIX + TYPED, 1)

    def decode(self, speculative: bool = False) -> float:
        from transformers.generation.streamers import BaseStreamer

        class Arrivals(BaseStreamer):  # when each token arrives (the first is the prompt)
            def __init__(self) -> None:
                self.times: list[float] = []

            def put(self, value) -> None:
                self.times.append(time.perf_counter())

            def end(self) -> None:
                pass

        arrivals = Arrivals()
        self.generate(PREFIX, DECODE, arrivals)
        tokens = arrivals.times[1:]
        return (len(tokens) - 1) / (tokens[-1] - tokens[0])

    def close(self) -> None:
        pass


def run_side(side: str, model_dir: str, dtype: str) -> dict:
    """One side's measurements in this (fresh) process, with its peak RSS."""
    peak = PeakRSS()
    runner = Ours(model_dir, dtype) if side == "ours" else Transformers(model_dir, dtype)
    result = {"cold": runner.cold(), "warm": runner.warm(), "tps": runner.decode()}
    result["tps_spec"] = runner.decode(speculative=True)
    runner.close()
    result["peak"] = peak.stop()
    return result


def alternate(model_dir: str, dtype: str, rounds: int) -> dict[str, list[dict]]:
    """Both sides in this one process, measured turn about: drift hits both alike."""
    sides = {"ours": Ours(model_dir, dtype), "transformers": Transformers(model_dir, dtype)}
    results: dict[str, list[dict]] = {"ours": [], "transformers": []}
    for round_ in range(rounds):
        for name in sorted(sides, reverse=bool(round_ % 2)):
            runner = sides[name]
            results[name].append(
                {"cold": runner.cold(), "warm": runner.warm(), "tps": runner.decode()}
            )
    for runner in sides.values():
        runner.close()
    return results


ROWS = (  # (name, key, better)
    ("cold time to first token (s)", "cold", "lower"),
    ("warm time to first token (s)", "warm", "lower"),
    ("decode tokens/s", "tps", "higher"),
    ("decode tokens/s, speculative on", "tps_spec", "higher"),
    ("peak RSS (MB)", "peak", "lower"),
)


def spread(values: list[float], digits: str = ".3g") -> str:
    """The median, and the range when there is more than one value."""
    median = format(statistics.median(values), digits)
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), digits)} to {format(max(values), digits)})"


def measure(model_dir: Path, dtype: str, rounds: int) -> dict[str, list[dict]]:
    """Each side in its own process per round; the order alternates so drift hits both."""
    results: dict[str, list[dict]] = {"ours": [], "transformers": []}
    for round_ in range(rounds):
        sides = ("ours", "transformers") if round_ % 2 == 0 else ("transformers", "ours")
        for side in sides:
            command = [sys.executable, __file__, "--side", side, "--model", str(model_dir),
                       "--dtypes", dtype]  # fmt: skip
            out = subprocess.check_output(command, stderr=subprocess.DEVNULL)
            results[side].append(json.loads(out))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8", "int4"])
    parser.add_argument("--rounds", type=int, default=3, help="processes per side and dtype")
    parser.add_argument("--alternate", type=int, default=8, help="rounds in one process")
    parser.add_argument(
        "--side", choices=("ours", "transformers", "alternate"), help=argparse.SUPPRESS
    )
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "alternate":  # both sides, turn about, in this process
        print(json.dumps(alternate(args.model, args.dtypes[0], args.rounds)))
        return
    if args.side:  # one side's measurement, in this (fresh) process
        print(json.dumps(run_side(args.side, args.model, args.dtypes[0])))
        return

    from codestral_engine.weights.tiny import TinyShape, make_tiny

    model_dir = make_tiny(Path(tempfile.mkdtemp()) / "bench", "hf", shape=TinyShape(**BENCH_SHAPE))
    params = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) // 4
    machine = f"{platform.platform()}, {platform.machine()}"
    print(f"Machine: {machine}; model ~{params / 1e6:.0f}M parameters\n")
    print(f"Each side in its own processes, {args.rounds} rounds:\n")
    print(HEADER)
    for dtype in args.dtypes:
        rows(dtype, measure(model_dir, dtype, args.rounds), ROWS)
    print(f"\nBoth sides in one process, turn about, {args.alternate} rounds:\n")
    print(HEADER)
    for dtype in args.dtypes:
        command = [sys.executable, __file__, "--side", "alternate", "--model", str(model_dir),
                   "--dtypes", dtype, "--rounds", str(args.alternate)]  # fmt: skip
        results = json.loads(subprocess.check_output(command, stderr=subprocess.DEVNULL))
        rows(dtype, results, [row for row in ROWS if row[1] in ("cold", "warm", "tps")])


HEADER = """| dtype | metric | ours (torch backend) | transformers | ours vs transformers |
|---|---|---:|---:|---:|"""


def rows(dtype: str, results: dict[str, list[dict]], metrics) -> None:
    for name, key, better in metrics:
        digits = ".0f" if key == "peak" else ".3g"
        scale = 1e-6 if key == "peak" else 1
        ours = [r[key] * scale for r in results["ours"]]
        theirs = [r[key] * scale for r in results["transformers"]]
        # Ratios pair the two sides of one round: they ran next to each other.
        pairs = zip(ours, theirs, strict=True)
        ratios = [b / a if better == "lower" else a / b for a, b in pairs]
        print(
            f"| {dtype} | {name} | {spread(ours, digits)} | {spread(theirs, digits)} | "
            f"{spread(ratios, '.2f')}x |"
        )


if __name__ == "__main__":
    main()
