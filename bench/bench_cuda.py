"""Codestral-22B's real architecture on a CUDA GPU, with random weights: the memory preflight's
estimate against the measured peak, and what loading and generating cost.

1. Writes a random-weight model in Codestral-22B's exact shapes (56 layers, hidden 6144, GQA
   48/8, FFN 16384, vocab 32768) in the Hugging Face layout, bf16, generated on the GPU shard by
   shard, with Codestral's real tokenizer (44.5 GB on disk).
2. For bf16 and int8 weights, in a fresh process each: `codestral_engine.load(..., "torch",
   device="cuda")` with an 8K window; the preflight's estimate for that window; then a cold
   ~2K-token FIM request and a warm one (one more character), 64 tokens each. Peak is
   `torch.cuda.max_memory_allocated` over load and both requests.
3. Device bandwidth (a large copy), so decode time can be set against the floor: weight bytes
   read per token / bandwidth. Each precision runs with the dynamic decode step and with the
   static slot compiled with CUDA graphs (`static_decode`), in the same run.

Usage (on a machine with a CUDA GPU and ~50 GB free disk): python bench/bench_cuda.py [--dir D]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

WINDOW = 8192
MEASURE = """
import json, sys, time, torch
import codestral_engine
from codestral_engine.weights.checkpoint import inspect
from codestral_engine.weights.preflight import plan
model, quantize = sys.argv[1], (sys.argv[2] if sys.argv[2] != "none" else None)
window, static = int(sys.argv[3]), sys.argv[4]
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
engine = codestral_engine.load(model, "torch", device="cuda", dtype="bfloat16",
                               quantize=quantize, context_length=window, static_decode=static,
                               speculative=False)  # plain decode steps: the bandwidth question
load_s = time.perf_counter() - t
after_load = torch.cuda.max_memory_allocated()
estimate = plan(inspect(model), "torch", "bfloat16", quantize, window, static != "off")
prompt = "def double(x):\\n    return x * 2\\n\\n" * 150
engine.fim(prompt[:200], "\\n", max_tokens=8, min_tokens=8).result()  # compiles (static)
engine.prompt_cache.clear()  # the cold request below prefills it all
cold = engine.fim(prompt, "\\n", max_tokens=64, min_tokens=64).result().usage
warm = engine.fim(prompt + "y", "\\n", max_tokens=64, min_tokens=64).result().usage
torch.cuda.synchronize()
print(json.dumps({
    "quantize": quantize or "bf16", "static_decode": static, "load_s": load_s,
    "estimate_bytes": estimate.total, "estimate_weights": estimate.weight_bytes,
    "estimate_kv": estimate.kv_bytes, "peak_after_load": after_load,
    "peak_bytes": torch.cuda.max_memory_allocated(),
    "prompt_tokens": cold.prompt_tokens, "cold_ttft_s": cold.time_to_first_token_s,
    "warm_ttft_s": warm.time_to_first_token_s, "warm_cached": warm.cached_prompt_tokens,
    "decode_tok_s": warm.decode_tokens_per_s,
}))
engine.close()
"""


def hf_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    h, v, f = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    shapes |= {"model.norm.weight": (h,), "lm_head.weight": (v, h)}
    return shapes


def write_model(out: Path, shard_bytes: int = 5 << 30) -> None:
    import mistral_common
    import torch
    from safetensors.torch import save_file

    from codestral_engine.weights.checkpoint import CODESTRAL_22B_CONFIG

    config = dict(CODESTRAL_22B_CONFIG, architectures=["MistralForCausalLM"],
                  torch_dtype="bfloat16", tie_word_embeddings=False)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    shapes = hf_shapes(config)
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        n = 2 * int(torch.tensor(shape).prod())
        if size + n > shard_bytes and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    weight_map = {}
    gen = torch.Generator(device="cuda").manual_seed(0)
    for i, names in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            if len(shape) == 1:
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:
                scale = shape[1] ** -0.5
                t = (torch.randn(shape, generator=gen, device="cuda") * scale).to(torch.bfloat16)
            tensors[name] = t.cpu()
            weight_map[name] = file
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        print(f"  wrote {file}", flush=True)
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    data = Path(mistral_common.__file__).parent / "data"
    shutil.copyfile(next(data.glob("mistral_instruct_tokenizer_240323.model.v3")),
                    out / "tokenizer.model.v3")  # fmt: skip


def bandwidth() -> float:
    """Bytes per second a large device-to-device copy moves (read + write)."""
    import torch

    a = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/codestral-22b-random"))
    parser.add_argument("--quantize", nargs="+", default=["none", "int8"])
    parser.add_argument("--static", nargs="+", default=["off", "reduce-overhead"],
                        help="decode steps: the dynamic one (off) and the compiled static slot")
    args = parser.parse_args()
    import torch

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    if not (args.dir / "config.json").exists():
        t = time.perf_counter()
        write_model(args.dir)
        print(f"wrote the model in {time.perf_counter() - t:.0f} s", flush=True)
    bw = bandwidth()
    print(json.dumps({"bandwidth_bytes_per_s": bw}), flush=True)
    weights = sum(f.stat().st_size for f in args.dir.glob("*.safetensors"))
    for q in args.quantize:
        for static in args.static:
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, str(args.dir), q, str(WINDOW), static],
                capture_output=True, text=True,
            )  # fmt: skip
            print(out.stdout.strip() or out.stderr[-3000:], flush=True)
            if out.returncode == 0:
                rate = json.loads(out.stdout.strip().splitlines()[-1])["decode_tok_s"]
                read = weights / (2 if q == "int8" else 1)  # bytes of weights per token
                print(f"{q} {static}: {rate:.1f} tok/s = {rate * read / bw:.0%} of bandwidth",
                      flush=True)


if __name__ == "__main__":
    main()
