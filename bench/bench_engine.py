"""Engine vs mlx-lm's stream_generate on one model and one FIM prompt, in one run.

Measures cold time to first token (empty caches), warm time to first token after typing
1..8 tokens at the cursor (our prompt cache; mlx-lm has no cross-request cache, so every
mlx-lm request is cold), decode tokens/s and peak memory, and prints a Markdown table with
ratios. Usage: python bench/bench_engine.py [--prompt-tokens 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import load_model
from transformers import LlamaTokenizer

import codestral_engine
from codestral_engine.core.events import TextDelta
from codestral_engine.weights.tiny import TinyShape, make_tiny, tokenizer_path

# Big enough that a 2K-token prefill dominates, small enough for MLX on a laptop CPU.
BENCH_SHAPE = TinyShape(
    hidden_size=256,
    num_hidden_layers=4,
    intermediate_size=704,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
)
# Typed at the cursor after the cached prompt: 1 to 8 new tokens.
TYPED = [
    "s",
    "sum",
    "sum(row",
    "sum(row.",
    "sum(row.values",
    "sum(row.values())",
    "sum(row.values()) / len(row)",
]


def fim_prompt(engine: codestral_engine.Engine, prompt_tokens: int) -> tuple[str, str]:
    """A notebook-like Python prefix and suffix of about `prompt_tokens` tokens (3:1)."""
    block = (
        "def load_{i}(path):\n    rows = read_csv(path)\n"
        "    return [r for r in rows if r['id'] != {i}]\n\n"
    )
    prefix, suffix, i = "", "", 0
    while len(engine.tokenizer.encode_fim(prefix, suffix)) < prompt_tokens:
        prefix += block.format(i=i)
        if i % 3 == 0:
            suffix += block.format(i=10_000 + i)
        i += 1
    return prefix + "def average(row):\n    return ", "\n\n" + suffix


def decode_rate(times: list[float]) -> float | None:
    """Tokens per second after the first, from arrival times seen by the caller."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None


def ours(engine: codestral_engine.Engine, prefix: str, suffix: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    arrivals = []
    for event in engine.fim(prefix, suffix, max_tokens=max_tokens):
        if isinstance(event, TextDelta) and event.token_ids:
            arrivals.append(time.perf_counter())
    usage = event.usage
    return {
        "ttft": arrivals[0] - start,
        "tps": decode_rate(arrivals),
        "peak": usage.peak_memory_bytes,
        "new_tokens": usage.prompt_tokens - usage.cached_prompt_tokens,
    }


def reference(model, tokenizer, ids: list[int], max_tokens: int) -> dict:
    mx.reset_peak_memory()
    start = time.perf_counter()
    arrivals = [
        time.perf_counter() for _ in stream_generate(model, tokenizer, ids, max_tokens=max_tokens)
    ]
    return {"ttft": arrivals[0] - start, "tps": decode_rate(arrivals), "peak": mx.get_peak_memory()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--decode-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model_dir = make_tiny(Path(tempfile.mkdtemp()) / "bench", "mlx", seed=0, shape=BENCH_SHAPE)
    engine = codestral_engine.load(model_dir, "mlx")
    ref_model, _ = load_model(model_dir)
    ref_tokenizer = TokenizerWrapper(LlamaTokenizer(vocab_file=str(tokenizer_path()), legacy=True))
    prefix, suffix = fim_prompt(engine, args.prompt_tokens)
    ids = engine.tokenizer.encode_fim(prefix, suffix)

    ours_cold, ref_cold, ours_warm, ours_decode, ref_decode = [], [], [], [], []
    for _ in range(args.repeats):  # interleaved so drift in machine load hits both sides
        engine.prompt_cache.clear()
        ours_cold.append(ours(engine, prefix, suffix, 1))
        ref_cold.append(reference(ref_model, ref_tokenizer, ids, 1))
        for typed in TYPED:  # warm: the cursor's prompt is cached, then the user types
            ours(engine, prefix, suffix, 1)
            ours_warm.append(ours(engine, prefix + typed, suffix, 1))
        ours_decode.append(ours(engine, prefix, suffix, args.decode_tokens))
        ref_decode.append(reference(ref_model, ref_tokenizer, ids, args.decode_tokens))
    engine.close()

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    warm_new = sorted({r["new_tokens"] for r in ours_warm})
    rows = [
        ("cold time to first token (s)", med(ours_cold, "ttft"), med(ref_cold, "ttft"), "lower"),
        (
            f"warm time to first token, +{warm_new[0]}..{warm_new[-1]} tokens (s)",
            med(ours_warm, "ttft"),
            med(ref_cold, "ttft"),
            "lower",
        ),
        ("decode tokens/s", med(ours_decode, "tps"), med(ref_decode, "tps"), "higher"),
        (
            "peak memory (MB)",
            med(ours_decode, "peak") / 1e6,
            med(ref_decode, "peak") / 1e6,
            "lower",
        ),
    ]
    machine = platform.processor() or platform.machine()
    print(
        f"Machine: {platform.platform()}, {machine}, MLX {mx.__version__} on {mx.default_device()}"
    )
    print(
        f"Model: {BENCH_SHAPE.num_hidden_layers} layers, hidden {BENCH_SHAPE.hidden_size}, "
        f"vocab 32768; prompt {len(ids)} tokens; median of {args.repeats} interleaved runs\n"
    )
    print("| metric | ours | mlx-lm stream_generate | ours vs mlx-lm |")
    print("|---|---:|---:|---:|")
    for name, a, b, better in rows:
        ratio = b / a if better == "lower" else a / b
        print(f"| {name} | {a:.4g} | {b:.4g} | {ratio:.2f}x |")
    spread = {
        name: f"{min(r['tps'] for r in rows):.1f}-{max(r['tps'] for r in rows):.1f}"
        for name, rows in (("ours", ours_decode), ("mlx-lm", ref_decode))
    }
    print(f"\nDecode tokens/s, min-max over runs: ours {spread['ours']}, mlx-lm {spread['mlx-lm']}")
    cold, warm = med(ours_cold, "ttft"), med(ours_warm, "ttft")
    print(f"Ours, cold / warm time to first token: {cold / warm:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
