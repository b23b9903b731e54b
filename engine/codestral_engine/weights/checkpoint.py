"""What is in a model directory: its layout, its config, and a strict check of its tensors.

Three layouts hold the same Codestral weights:
- "mlx": mlx-community conversions (config.json + model*.safetensors, maybe 4/8-bit quantized),
- "hf": Hugging Face (config.json + model-0000N-of-0000M.safetensors + index),
- "mistral": Mistral's native release (params.json + consolidated.safetensors).

Everything is normalised to Hugging Face tensor names and config keys, which mlx-lm's model
code expects. Native checkpoints store the query/key rows of each head interleaved for complex
RoPE; `native_rope_rows_to_hf` reorders them exactly as Hugging Face's conversion script does,
so all three layouts give the same logits. Only safetensors are read, and only their headers
until the backend loads them: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from ..errors import ModelLoadError
from .model_config import ModelConfig

SUPPORTED_MODEL_TYPES = ("mistral", "llama")
DEFAULT_CONTEXT_LENGTH = 32768  # Codestral-22B-v0.1
# Codestral-22B-v0.1's architecture as Hugging Face config keys (for estimates and tests).
CODESTRAL_22B_CONFIG = {
    "model_type": "mistral",
    "hidden_size": 6144,
    "num_hidden_layers": 56,
    "intermediate_size": 16384,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1e6,
    "max_position_embeddings": DEFAULT_CONTEXT_LENGTH,
}
FLOAT_DTYPES = {"F16", "BF16", "F32"}
_NATIVE_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_NATIVE_TO_HF = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_NATIVE_LAYER_TO_HF = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_HF_TO_NATIVE = {hf: native for native, hf in _NATIVE_TO_HF.items()}
_HF_LAYER_TO_NATIVE = {hf: native for native, hf in _NATIVE_LAYER_TO_HF.items()}
# Native params.json key -> Hugging Face config key.
_PARAMS_TO_CONFIG = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "head_dim": "head_dim",
    "hidden_dim": "intermediate_size",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "norm_eps": "rms_norm_eps",
    "vocab_size": "vocab_size",
    "rope_theta": "rope_theta",
}
REQUIRED_CONFIG = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "rms_norm_eps",
    "vocab_size",
)


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str  # safetensors dtype name: "BF16", "F32", "U32", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Checkpoint:
    """A model directory, understood: layout, HF-style config, and every tensor's header."""

    path: Path
    layout: str
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]  # keyed by the name in the file

    @cached_property
    def model_config(self) -> ModelConfig:
        """The architecture, typed (the raw `config` stays for mlx-lm and the converter)."""
        return ModelConfig.from_dict(self.config)

    @property
    def context_length(self) -> int:
        return int(self.config.get("max_position_embeddings") or DEFAULT_CONTEXT_LENGTH)

    @property
    def quantization(self) -> dict[str, Any] | None:
        return self.config.get("quantization")

    def hf_name(self, file_name: str) -> str:
        """The Hugging Face name of a tensor as stored in this checkpoint."""
        return native_to_hf_name(file_name) if self.layout == "mistral" else file_name

    @property
    def weight_bytes(self) -> int:
        return sum(f.stat().st_size for f in {t.file for t in self.tensors.values()})


def inspect(path: str | Path) -> Checkpoint:
    """Detect the layout of `path` and read its config and tensor headers (no weights)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelLoadError(
            f"Model directory {root} does not exist. Pass the folder that holds the model's "
            "config.json or params.json (try `codestral-engine make-tiny DIR` for a test model)."
        )
    if (root / "params.json").is_file():
        files = sorted(root.glob("consolidated*.safetensors"))
        _require_safetensors(root, files, "consolidated.safetensors")
        config = _config_from_params(root / "params.json")
        layout = "mistral"
    elif (root / "config.json").is_file():
        config = _read_json(root / "config.json")
        files = _hf_weight_files(root)
        layout = "mlx" if "quantization" in config or _is_mlx_export(files[0]) else "hf"
    else:
        raise ModelLoadError(
            f"{root} is not a model directory: it has neither config.json (Hugging Face or MLX "
            "layout) nor params.json (Mistral's native layout)."
        )
    _check_config(root, config)
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        tensors.update(_read_headers(file))
    return Checkpoint(root, layout, config, tensors)


def check_tensors(
    checkpoint: Checkpoint, expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> None:
    """Every expected tensor present with its shape and kind of dtype, and nothing left over.

    `expected` maps HF names to (shape, kind) where kind is "float" or a safetensors dtype.
    """
    found = {checkpoint.hf_name(name): (name, info) for name, info in checkpoint.tensors.items()}
    where = checkpoint.path
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ModelLoadError(
            f"Tensor {missing[0]}{more} is missing from the checkpoint in {where}. The download "
            "is incomplete or belongs to another model: fetch the complete checkpoint again."
        )
    leftover = sorted(set(found) - set(expected))
    if leftover:
        name, info = found[leftover[0]]
        raise ModelLoadError(
            f"Tensor {name} in {info.file.name} is not part of a Codestral (Mistral) model with "
            f"this config. Check that config.json/params.json matches the weights in {where}."
        )
    for hf_name, (shape, kind) in expected.items():
        name, info = found[hf_name]
        if tuple(info.shape) != tuple(shape):
            raise ModelLoadError(
                f"Tensor {name} in {info.file.name} has shape {list(info.shape)}, but the config "
                f"needs {list(shape)}. The config and the weights in {where} come from "
                "different models: use the config file shipped with these weights."
            )
        ok = info.dtype in FLOAT_DTYPES if kind == "float" else info.dtype == kind
        if not ok:
            want = "a float type (F16, BF16, F32)" if kind == "float" else kind
            raise ModelLoadError(
                f"Tensor {name} in {info.file.name} has dtype {info.dtype}, expected {want}. "
                "Re-export the checkpoint with float weights (or mlx-lm's quantization)."
            )


def native_to_hf_name(name: str) -> str:
    """Mistral-native tensor name -> Hugging Face name (unknown names are returned as is)."""
    return _rename(name, _NATIVE_TO_HF, _NATIVE_LAYER, _NATIVE_LAYER_TO_HF, "model.layers.")


def hf_to_native_name(name: str) -> str:
    """Hugging Face tensor name -> Mistral-native name (the inverse of `native_to_hf_name`)."""
    return _rename(name, _HF_TO_NATIVE, _HF_LAYER, _HF_LAYER_TO_NATIVE, "layers.")


def _rename(name: str, whole: dict, layer: re.Pattern, in_layer: dict, layer_prefix: str) -> str:
    if name in whole:
        return whole[name]
    match = layer.match(name)
    if match and match.group(2) in in_layer:
        return f"{layer_prefix}{match.group(1)}.{in_layer[match.group(2)]}"
    return name


def rope_heads(hf_name: str, config: ModelConfig) -> int | None:
    """Head count whose rows a native q/k projection interleaves, or None for other tensors."""
    if hf_name.endswith("self_attn.q_proj.weight"):
        return config.num_attention_heads
    if hf_name.endswith("self_attn.k_proj.weight"):
        return config.num_key_value_heads
    return None


def hf_tensors(
    checkpoint: Checkpoint, read_file: Callable[[Path], Iterable[tuple[str, Any]]]
) -> Iterator[tuple[str, Any]]:
    """Every stored tensor as (Hugging Face name, tensor), file by file: the one weight-reading
    path both backends share. `read_file` yields a file's (stored name, tensor) pairs in the
    backend's own array type; q/k rows of a Mistral-native checkpoint come back in HF order."""
    native = checkpoint.layout == "mistral"
    for file in sorted({t.file for t in checkpoint.tensors.values()}):
        for name, tensor in read_file(file):
            hf_name = checkpoint.hf_name(name)
            heads = rope_heads(hf_name, checkpoint.model_config) if native else None
            yield hf_name, native_rope_rows_to_hf(tensor, heads) if heads else tensor


def native_rope_rows_to_hf(w: Any, n_heads: int) -> Any:
    """Reorder a native q/k weight's rows (pairs per head) into HF's half-split RoPE order."""
    rows, cols = w.shape
    # (n_heads, head_dim/2, 2, cols) -> (n_heads, 2, head_dim/2, cols)
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_rope_rows_to_native(w: Any, n_heads: int) -> Any:
    """Inverse of `native_rope_rows_to_hf` (used to write native test checkpoints)."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"Cannot parse {path}: {exc}. Restore the file from the model's release."
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{path} must hold a JSON object. Restore it from the model's release."
        )
    return data


def _config_from_params(path: Path) -> dict[str, Any]:
    params = _read_json(path)
    for unsupported in ("moe", "vision_encoder", "lora"):
        if params.get(unsupported):
            raise ModelLoadError(
                f"{path} describes a model with '{unsupported}', which this engine does not run. "
                "It runs Codestral-22B (a dense Mistral model)."
            )
    config = {hf: params[native] for native, hf in _PARAMS_TO_CONFIG.items() if native in params}
    config.setdefault("rope_theta", 10000.0)
    config["model_type"] = "mistral"
    config["tie_word_embeddings"] = False
    config["max_position_embeddings"] = params.get("max_seq_len", DEFAULT_CONTEXT_LENGTH)
    return config


def _check_config(root: Path, config: dict[str, Any]) -> None:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"Unsupported architecture {model_type!r} in {root}: this engine runs Codestral, a "
            f"Mistral-architecture model (model_type one of {', '.join(SUPPORTED_MODEL_TYPES)})."
        )
    absent = [key for key in REQUIRED_CONFIG if key not in config]
    if absent:
        raise ModelLoadError(
            f"The config in {root} lacks {', '.join(absent)}. Restore config.json or params.json "
            "from the model's release."
        )


def _hf_weight_files(root: Path) -> list[Path]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index} has no weight_map. Restore it from the model's release.")
        files = sorted({root / name for name in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise ModelLoadError(
                f"Weight file {absent[0]} listed in {index.name} is missing from {root}. "
                "The download is incomplete: fetch the missing shard(s) again."
            )
        return files
    files = sorted(root.glob("model*.safetensors"))
    _require_safetensors(root, files, "model.safetensors")
    return files


def _require_safetensors(root: Path, files: list[Path], expected: str) -> None:
    if files:
        return
    pickled = sorted(p.name for p in root.iterdir() if p.suffix in (".bin", ".pth", ".pt"))
    if pickled:
        raise ModelLoadError(
            f"{root} holds only pickle weights ({pickled[0]}); this engine reads safetensors "
            "only, because unpickling can run arbitrary code. Download the .safetensors release."
        )
    raise ModelLoadError(
        f"No weights in {root}: expected {expected}. The download is incomplete or this is "
        "the wrong folder."
    )


def _is_mlx_export(file: Path) -> bool:
    try:
        with safe_open(file, framework="numpy") as handle:
            return (handle.metadata() or {}).get("format") == "mlx"
    except SafetensorError:
        return False  # _read_headers reports the broken file with its name


def _read_headers(file: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(file, framework="numpy") as handle:
            headers = {}
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                view = handle.get_slice(name)
                headers[name] = TensorInfo(file, view.get_dtype(), tuple(view.get_shape()))
            return headers
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(
            f"Weight file {file} is truncated or corrupt ({exc}). Delete it and download it again."
        ) from exc
