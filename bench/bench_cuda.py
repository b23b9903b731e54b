"""Codestral-22B's real layer shapes on a CUDA GPU, with random weights: decode speed against
the bandwidth floor for each precision and decode step, and the memory preflight's estimate
against the measured peak.

1. Writes random-weight models with Codestral-22B's exact shapes (hidden 6144, GQA 48/8, FFN
   16384, vocab 32768) but fewer layers (default 2 and 6), bf16 in the Hugging Face layout,
   generated on the GPU, with Codestral's real tokenizer, into memory-backed storage
   (/dev/shm when it has room): a few GB and seconds instead of 44.5 GB on disk.
2. For each layer count and weight format (bf16, int8, int4), in a fresh process:
   `codestral_engine.load(..., "torch", device="cuda")` with an 8K window, then with the
   dynamic decode step and with the static slot compiled with CUDA graphs (`static_decode`),
   a cold ~2K-token FIM request and a warm one (one more character), 64 tokens each, greedy,
   speculative decoding off (plain steps: the bandwidth question). Peak is
   `torch.cuda.max_memory_allocated` over load and the requests.
3. Device bandwidth (a large copy, bytes read and written). A decode step's time grows by the
   same amount per layer, so two layer counts give the fixed part (embedding, output head,
   sampling) and the per-layer part, and from them the 56-layer step; weight bytes read per
   token / bandwidth is its floor. `--layers 56` measures the whole model directly.

Usage (on a machine with a CUDA GPU): python bench/bench_cuda.py [--layers 2 6]
[--quantize none int8 int4] [--static off reduce-overhead] [--dir D]
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
FULL_LAYERS = 56
MEASURE = """
import json, sys, time, torch
import codestral_engine
from codestral_engine.weights.checkpoint import inspect
from codestral_engine.assembly.preflight import plan
model, quantize, device = sys.argv[1], (None if sys.argv[2] == "none" else sys.argv[2]), sys.argv[3]
statics, window = sys.argv[4].split(","), int(sys.argv[5])
cuda = device.startswith("cuda")
if cuda:
    torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
engine = codestral_engine.load(model, "torch", device=device, dtype="bfloat16",
                               quantize=quantize, context_length=window, static_decode="off",
                               speculative=False)  # plain decode steps: the bandwidth question
load_s = time.perf_counter() - t
checkpoint = inspect(model)
prompt = "def double(x):\\n    return x * 2\\n\\n" * 150
for static in statics:
    engine.backend.static_decode = None if static == "off" else static
    # The same prompt first: the static slot compiles for its size here, not in the timing.
    engine.fim(prompt, "\\n", max_tokens=8, min_tokens=8).result()
    engine.prompt_cache.clear()  # the cold request below prefills it all
    cold = engine.fim(prompt, "\\n", max_tokens=64, min_tokens=64).result().usage
    warm = engine.fim(prompt + "y", "\\n", max_tokens=64, min_tokens=64).result().usage
    if cuda:
        torch.cuda.synchronize()
    estimate = plan(checkpoint, "torch", "bfloat16", quantize, window, static != "off")
    print(json.dumps({
        "layers": checkpoint.model_config.num_hidden_layers, "quantize": quantize or "bf16",
        "static_decode": static, "load_s": load_s, "estimate_bytes": estimate.total,
        "estimate_weights": estimate.weight_bytes,
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
        "prompt_tokens": cold.prompt_tokens, "cold_ttft_s": cold.time_to_first_token_s,
        "warm_ttft_s": warm.time_to_first_token_s, "warm_cached": warm.cached_prompt_tokens,
        "decode_tok_s": warm.decode_tokens_per_s,
    }), flush=True)
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


def write_model(out: Path, config: dict, device: str, shard_bytes: int = 4 << 30) -> None:
    """A random bf16 checkpoint of `config`, each tensor generated on `device`."""
    import mistral_common
    import torch
    from safetensors.torch import save_file

    config = dict(
        config,
        architectures=["MistralForCausalLM"],
        torch_dtype="bfloat16",
        tie_word_embeddings=False,
    )
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
    gen = torch.Generator(device=device).manual_seed(0)
    for i, names in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            if len(shape) == 1:
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:
                scale = shape[1] ** -0.5
                t = (torch.randn(shape, generator=gen, device=device) * scale).to(torch.bfloat16)
            tensors[name] = t.cpu()
            weight_map[name] = file
        save_file(tensors, str(out / file), metadata={"format": "pt"})
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    data = Path(mistral_common.__file__).parent / "data"
    shutil.copyfile(
        next(data.glob("mistral_instruct_tokenizer_240323.model.v3")), out / "tokenizer.model.v3"
    )


def scratch(need: int) -> Path:
    """Memory-backed storage when it has room for `need` bytes, else /tmp."""
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 1.2 * need:
        return shm / "codestral-bench"
    return Path("/tmp/codestral-bench")


def bandwidth(device: str) -> float:
    """Bytes per second a large device-to-device copy moves (read + write)."""
    import torch

    a = torch.empty(
        4 << 30 if device.startswith("cuda") else 1 << 28, dtype=torch.uint8, device=device
    )
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - t)


def extrapolate(runs: list[dict]) -> dict[tuple[str, str], float]:
    """ms per decode step at 56 layers, from the steps at each measured layer count (a line
    through the two extreme counts; the value itself when 56 layers were measured)."""
    steps: dict[tuple[str, str], dict[int, float]] = {}
    for run in runs:
        key = (run["quantize"], run["static_decode"])
        steps.setdefault(key, {})[run["layers"]] = 1000 / run["decode_tok_s"]
    full = {}
    for key, by_layers in steps.items():
        if FULL_LAYERS in by_layers:
            full[key] = by_layers[FULL_LAYERS]
        elif len(by_layers) >= 2:
            low, high = min(by_layers), max(by_layers)
            per_layer = (by_layers[high] - by_layers[low]) / (high - low)
            full[key] = by_layers[low] + (FULL_LAYERS - low) * per_layer
    return full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--quantize", nargs="+", default=["none", "int8", "int4"])
    parser.add_argument(
        "--static",
        nargs="+",
        default=["off", "reduce-overhead"],
        help="decode steps: the dynamic one (off) and the compiled static slot",
    )
    parser.add_argument("--dir", type=Path, help="where the models go (default: /dev/shm)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # CPU dry run
    args = parser.parse_args()
    import torch

    from codestral_engine.weights.checkpoint import CODESTRAL_22B_CONFIG

    device = "cpu" if args.tiny else "cuda"
    shape = dict(CODESTRAL_22B_CONFIG)
    if args.tiny:  # the plumbing on the CPU: small layers, the real vocabulary
        shape |= dict(
            hidden_size=128,
            intermediate_size=256,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
        )
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    bw = bandwidth(device)
    print(f"copy bandwidth: {bw / 1e12:.2f} TB/s", flush=True)
    runs = []
    for layers in args.layers:
        config = dict(shape, num_hidden_layers=layers)
        need = 2 * sum(int(torch.tensor(s).prod()) for s in hf_shapes(config).values())
        model = (args.dir or scratch(need)) / f"layers-{layers}"
        if not (model / "config.json").exists():
            t = time.perf_counter()
            write_model(model, config, device)
            print(
                f"wrote {layers} layers ({need / 1e9:.1f} GB) to {model} in "
                f"{time.perf_counter() - t:.0f} s",
                flush=True,
            )
        for q in args.quantize:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    MEASURE,
                    str(model),
                    q,
                    device,
                    ",".join(args.static),
                    str(WINDOW),
                ],
                capture_output=True,
                text=True,
            )
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            for line in lines:
                print(line, flush=True)
                runs.append(json.loads(line))
            if out.returncode != 0:
                print(out.stderr[-3000:], flush=True)
    from codestral_engine.assembly.preflight import codestral_22b_plans

    plans = codestral_22b_plans(WINDOW)  # weight bytes read per token, by format
    print("\n| weights | decode step | ms per token, 56 layers | floor (ms) | of bandwidth |")
    print("|---|---|---:|---:|---:|")
    for (q, static), ms in extrapolate(runs).items():
        if args.tiny:  # small layers: a 56-layer floor would mean nothing
            print(f"| {q} | {static} | {ms:.1f} | - | - |")
            continue
        floor = plans[q].weight_bytes / bw * 1000
        print(f"| {q} | {static} | {ms:.1f} | {floor:.1f} | {floor / ms:.0%} |")


if __name__ == "__main__":
    main()
