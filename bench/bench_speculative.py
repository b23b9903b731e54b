"""Prompt-lookup speculative decoding, measured honestly on random-weight models.

Random weights cannot show real acceptance rates, so the measurement is in three parts:
(a) what verifying k+1 tokens in one pass costs against one decode step, per backend;
(b) end-to-end decode tokens/s with an oracle drafter whose drafts are right with probability
    p (from a reference greedy run), against decoding one token per step (speculative=False):
    the speed-up as a function of acceptance, with the real adaptation and pauses;
(c) the real prompt-lookup drafter on real code (this repository's Python files) as FIM
    requests: split at points in each file, the true next 64 tokens teacher-forced as the
    model's output, giving how many tokens each verification pass yields, and with (a)'s costs
    the speed-up to expect where the model writes what the code around it says.
Models: the ~202M torch model of bench_memory.py (float32 and bfloat16), and the MLX bench
model of bench_engine.py. MLX runs on the CPU here: its figures say nothing about Metal.
Usage: python bench/bench_speculative.py [--tokens 64] [--repeats 3] [--backends torch mlx]
[--torch-formats float32 bfloat16 int8 int4]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import codestral_engine
from bench.bench_engine import BENCH_SHAPE
from bench.bench_memory import MID_SHAPE
from codestral_engine.core import generation
from codestral_engine.core.speculative import PromptLookup
from codestral_engine.core.tokenizer import codestral_tokenizer
from codestral_engine.weights.tiny import TinyShape, make_tiny
from tests.helpers import OracleDrafter

ROOT = Path(__file__).resolve().parent.parent
PROBABILITIES = (0.0, 0.3, 0.6, 0.9)
BLOCKS = (1, 2, 3, 5, 9)  # tokens read in one pass: the current one and k drafts
CONTEXT_TOKENS = 600


def fim_prompt(tokenizer) -> tuple[str, str]:
    code = (ROOT / "jupyter_codestral" / "context" / "notebook.py").read_text()
    ids = tokenizer.encode(code)
    after = ids[CONTEXT_TOKENS:][:200]
    return tokenizer.decode(ids[:CONTEXT_TOKENS]), "\n" + tokenizer.decode(after)


def verify_costs(engine, repeats: int) -> dict[int, float]:
    """Milliseconds to read T tokens in one pass after a ~600-token cache, T in BLOCKS, the
    block sizes interleaved repeat by repeat."""
    backend = engine.backend
    cache = backend.new_cache()
    prompt = list(range(1000, 1000 + CONTEXT_TOKENS))
    if backend.name == "torch":
        import torch

        def run(ids):
            with torch.inference_mode():
                backend.model(torch.tensor(ids), cache, rows=len(ids))

    else:
        import mlx.core as mx

        def run(ids):
            mx.eval(backend.model(mx.array(ids, dtype=mx.uint32)[None], cache=cache.layers))

    run(prompt)
    times: dict[int, list[float]] = {block: [] for block in BLOCKS}
    for repeat in range(repeats + 1):  # the first warms up
        for block in BLOCKS:
            start = time.perf_counter()
            run(list(range(5, 5 + block)))
            if repeat:
                times[block].append(time.perf_counter() - start)
            cache.trim_to(CONTEXT_TOKENS)
    costs = {block: statistics.median(t) * 1000 for block, t in times.items()}
    return costs


def decode_rate(engine, prefix: str, suffix: str, tokens: int) -> tuple[float, object]:
    engine.prompt_cache.clear()
    done = engine.fim(prefix, suffix, max_tokens=tokens, min_tokens=tokens).result()
    return done.usage.decode_tokens_per_s, done


def oracle_curve(model: Path, backend: str, options: dict, args) -> tuple[dict, dict, dict]:
    """One engine for every variant, run interleaved repeat by repeat, so load order, warm-up
    and the machine's drift fall on all of them alike."""
    rates: dict = {"baseline": [], **{p: [] for p in PROBABILITIES}}
    kept = {}
    with codestral_engine.load(model, backend, speculative=True, **options) as engine:
        prefix, suffix = fim_prompt(engine.tokenizer)
        runtime = engine._runtime  # the bench switches speculation per run
        runtime.speculative = False
        reference = engine.fim(prefix, suffix, max_tokens=args.tokens, min_tokens=args.tokens)
        reference = reference.result()
        costs = verify_costs(engine, max(5, args.repeats))
        for _ in range(args.repeats):
            runtime.speculative = False
            rates["baseline"].append(decode_rate(engine, prefix, suffix, args.tokens)[0])
            runtime.speculative = True
            for p in PROBABILITIES:
                oracle = OracleDrafter(
                    list(reference.prompt_token_ids), list(reference.completion_token_ids), p
                )
                generation.PromptLookup = oracle.restarted
                try:
                    rate, done = decode_rate(engine, prefix, suffix, args.tokens)
                finally:
                    generation.PromptLookup = PromptLookup
                rates[p].append(rate)
                same = done.completion_token_ids == reference.completion_token_ids
                kept[p] = (done.usage.draft_tokens, done.usage.accepted_draft_tokens, same)
    return {k: statistics.median(v) for k, v in rates.items()}, costs, kept


def lookup_on_real_code(max_tokens: int) -> tuple[float, float, list[int]]:
    """Teacher-forced: the true continuation as the model's output. Returns the acceptance
    rate, tokens per verification pass, and the draft lengths verified."""
    tokenizer = codestral_tokenizer()
    jupyter = (ROOT / "jupyter_codestral").rglob("*.py")  # the modules once flat in it
    files = sorted(p for p in jupyter if "classroom" not in p.parts) + sorted(
        (ROOT / "engine" / "codestral_engine" / "core").glob("*.py")
    )
    drafted = accepted = produced = passes = 0
    blocks: list[int] = []
    for file in files:
        ids = tokenizer.encode(file.read_text())
        for cut in range(200, len(ids) - max_tokens, 400):
            truth = ids[cut : cut + max_tokens]
            prefix = tokenizer.decode(ids[max(0, cut - 1500) : cut])
            suffix = tokenizer.decode(ids[cut + max_tokens : cut + max_tokens + 500])
            lookup = PromptLookup(tokenizer.encode_fim(prefix, suffix))
            done = 0
            while done < len(truth):
                draft = lookup.propose(len(truth) - done - 1) if done else []
                kept = 0
                while kept < len(draft) and draft[kept] == truth[done + kept]:
                    kept += 1
                lookup.record(len(draft), kept)
                step = truth[done : done + kept + 1]
                lookup.extend(step)
                done += len(step)
                drafted, accepted, passes = drafted + len(draft), accepted + kept, passes + 1
                blocks.append(len(draft) + 1)
            produced += len(truth)
    return accepted / max(1, drafted), produced / passes, blocks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["torch", "mlx"])
    parser.add_argument(
        "--torch-formats",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=("float32", "bfloat16", "int8", "int4"),
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    setups = []
    if "torch" in args.backends:
        mid = make_tiny(root / "mid", "hf", shape=TinyShape(**MID_SHAPE))
        for form in args.torch_formats:
            quantized = form in ("int8", "int4")  # bf16 activations
            options = {"dtype": "bfloat16", "quantize": form} if quantized else {"dtype": form}
            setups.append((f"torch {form} (~202M)", mid, "torch", options))
    if "mlx" in args.backends:
        small = make_tiny(root / "mlx", "mlx", seed=0, shape=BENCH_SHAPE)
        setups.append(("mlx, CPU (bench model)", small, "mlx", {}))

    import torch

    print(
        f"machine: {platform.machine()}, {platform.system()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )
    rate, per_pass, blocks = lookup_on_real_code(args.tokens)
    print(
        f"\n(c) prompt lookup on real code, teacher-forced: {rate:.0%} of drafted tokens kept, "
        f"{per_pass:.2f} tokens per verification pass"
    )
    for name, model, backend, options in setups:
        rates, costs, kept = oracle_curve(model, backend, options, args)
        one = costs[1]
        print(f"\n## {name}")
        print("(a) one pass over T tokens after a 600-token cache:")
        print("| T | ms | vs one decode step |\n|---:|---:|---:|")
        for block, ms in costs.items():
            print(f"| {block} | {ms:.1f} | {ms / one:.2f}x |")
        expected = len(blocks) and sum(blocks) / len(blocks)
        cost = statistics.mean(costs[min(BLOCKS, key=lambda b: abs(b - n))] for n in blocks)
        print(
            f"(c) expected on real code: {per_pass:.2f} tokens per pass at {cost / one:.2f}x a "
            f"step's cost (mean block {expected:.1f}) = {per_pass * one / cost:.2f}x decode"
        )
        print(f"(b) decode tokens/s, {args.tokens} tokens, median of {args.repeats}:")
        print("| drafts right with p | tokens/s | vs plain | drafted | kept | same tokens |")
        print("|---:|---:|---:|---:|---:|:-:|")
        print(f"| plain (speculative=False) | {rates['baseline']:.1f} | 1.00x | | | |")
        for p in PROBABILITIES:
            drafted, accepted, same = kept[p]
            print(
                f"| {p} | {rates[p]:.1f} | {rates[p] / rates['baseline']:.2f}x | {drafted} "
                f"| {accepted} | {'yes' if same else 'no'} |"
            )


if __name__ == "__main__":
    main()
