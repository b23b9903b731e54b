"""Tiny random-weight models in Codestral's architecture, for tests, demos and benchmarks.

Same layer types as Codestral-22B (RMSNorm, grouped-query attention, RoPE theta 1e6, SwiGLU,
untied output head, vocab 32768) with the real v3 tokenizer that mistral_common ships, scaled
down so MLX on a CPU runs it in milliseconds. The same seed gives the same weights in every
layout, so the layouts can be checked against each other.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mistral_common
import numpy as np

from .checkpoint import (
    DEFAULT_CONTEXT_LENGTH,
    hf_rope_rows_to_native,
    hf_to_native_name,
    rope_heads,
)
from .model_config import ModelConfig

LAYOUTS = ("mlx", "hf", "mistral")
DTYPES = ("float32", "float16", "bfloat16")
TOKENIZER_FILE = "mistral_instruct_tokenizer_240323.model.v3"
CODESTRAL_VOCAB = 32768


# make-tiny's size options and the fields they set. vLLM's CPU attention, for one, needs
# head_dim >= 32 (the default shape's 16 stays: other tests and the demo cache rely on it).
TINY_SHAPE_FLAGS = {
    "--hidden": "hidden_size",
    "--layers": "num_hidden_layers",
    "--ffn": "intermediate_size",
    "--heads": "num_attention_heads",
    "--kv-heads": "num_key_value_heads",
    "--head-dim": "head_dim",
}


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 96
    num_hidden_layers: int = 2
    intermediate_size: int = 256
    num_attention_heads: int = 6
    num_key_value_heads: int = 2  # 3 query heads per KV head (Codestral: 48 / 8)
    head_dim: int = 16
    context_length: int = DEFAULT_CONTEXT_LENGTH

    def check(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"--heads ({self.num_attention_heads}) must be a multiple of --kv-heads "
                f"({self.num_key_value_heads})"
            )

    def hf_config(self) -> dict:
        return {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1e6,
            "vocab_size": CODESTRAL_VOCAB,
            "max_position_embeddings": self.context_length,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }

    def native_params(self) -> dict:
        return {
            "dim": self.hidden_size,
            "n_layers": self.num_hidden_layers,
            "head_dim": self.head_dim,
            "hidden_dim": self.intermediate_size,
            "n_heads": self.num_attention_heads,
            "n_kv_heads": self.num_key_value_heads,
            "norm_eps": 1e-5,
            "vocab_size": CODESTRAL_VOCAB,
            "rope_theta": 1e6,
            "max_seq_len": self.context_length,
        }


def tokenizer_path() -> Path:
    """Codestral-22B's tokenizer as shipped inside mistral_common."""
    return Path(mistral_common.__file__).parent / "data" / TOKENIZER_FILE


def random_weights(shape: TinyShape, seed: int) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights, scaled so the logits are far from uniform."""
    rng = np.random.default_rng(seed)
    h, kv = shape.hidden_size, shape.num_key_value_heads * shape.head_dim
    q, ffn = shape.num_attention_heads * shape.head_dim, shape.intermediate_size

    def linear(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    weights = {
        "model.embed_tokens.weight": rng.standard_normal((CODESTRAL_VOCAB, h)).astype(np.float32)
    }
    for i in range(shape.num_hidden_layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": linear(q, h),
            p + "self_attn.k_proj.weight": linear(kv, h),
            p + "self_attn.v_proj.weight": linear(kv, h),
            p + "self_attn.o_proj.weight": linear(h, q),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": linear(ffn, h),
            p + "mlp.up_proj.weight": linear(ffn, h),
            p + "mlp.down_proj.weight": linear(h, ffn),
        }
    weights["model.norm.weight"] = norm()
    weights["lm_head.weight"] = linear(CODESTRAL_VOCAB, h, gain=4.0)
    return weights


def make_tiny(
    path: str | Path,
    layout: str = "mlx",
    *,
    seed: int = 0,
    shape: TinyShape | None = None,
    dtype: str = "float32",
    bits: int | None = None,
) -> Path:
    """Write a tiny Codestral-architecture model to `path` in `layout`; returns the path.

    `bits` (4 or 8) quantizes the MLX layout the way mlx-lm's converter does.
    """
    import mlx.core as mx  # writes bf16 and quantizes; imported only when a model is made

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if bits is not None and (layout != "mlx" or bits not in (4, 8)):
        raise ValueError("bits (4 or 8) applies to the mlx layout only")
    shape = shape or TinyShape()
    shape.check()
    if bits is not None and shape.hidden_size % 32:
        raise ValueError("bits needs a hidden size that is a multiple of 32 (group size)")
    out = Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    weights = random_weights(shape, seed)
    cast = getattr(mx, dtype)
    arrays = {name: mx.array(w).astype(cast) for name, w in weights.items()}
    config = shape.hf_config() | {"torch_dtype": dtype}

    if layout == "mlx":
        if bits:
            arrays, config["quantization"] = _quantize(arrays, shape, bits)
        _write_mlx(out, arrays, config)
    elif layout == "hf":
        _write_hf(out, arrays, config)
    else:
        _write_mistral(out, arrays, config, shape)
    return out


def _write_mlx(out: Path, arrays: dict, config: dict) -> None:
    """One file, as mlx-community publishes: config.json, model.safetensors, tokenizer.model."""
    import mlx.core as mx

    _write_json(out / "config.json", config)
    mx.save_safetensors(str(out / "model.safetensors"), arrays, metadata={"format": "mlx"})
    shutil.copyfile(tokenizer_path(), out / "tokenizer.model")  # as mlx-community names it


def _write_hf(out: Path, arrays: dict, config: dict) -> None:
    """Hugging Face's layout: two shards and their index."""
    import mlx.core as mx

    _write_json(out / "config.json", config)
    names = sorted(arrays)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(
            str(out / file), {n: arrays[n] for n in shard}, metadata={"format": "pt"}
        )
        weight_map |= dict.fromkeys(shard, file)
    _write_json(out / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    shutil.copyfile(tokenizer_path(), out / "tokenizer.model.v3")


def _write_mistral(out: Path, arrays: dict, config: dict, shape: TinyShape) -> None:
    """Mistral's native layout: params.json and consolidated.safetensors, native names and
    rotary rows."""
    import mlx.core as mx

    _write_json(out / "params.json", shape.native_params())
    native, typed = {}, ModelConfig.from_dict(config)
    for name, array in arrays.items():
        heads = rope_heads(name, typed)
        native[hf_to_native_name(name)] = hf_rope_rows_to_native(array, heads) if heads else array
    mx.save_safetensors(str(out / "consolidated.safetensors"), native, metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path(), out / "tokenizer.model.v3")


def _quantize(arrays: dict, shape: TinyShape, bits: int) -> tuple[dict, dict]:
    import mlx.core as mx

    group_size = 32  # divides the tiny hidden size (96); mlx-lm's default 64 would not
    quantized = {}
    for name, array in arrays.items():
        if name.endswith("norm.weight"):
            quantized[name] = array
            continue
        base = name.removesuffix(".weight")
        w, scales, biases = mx.quantize(array, group_size=group_size, bits=bits)
        quantized |= {name: w, f"{base}.scales": scales, f"{base}.biases": biases}
    return quantized, {"group_size": group_size, "bits": bits}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
