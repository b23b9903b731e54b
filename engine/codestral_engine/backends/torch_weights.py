"""The torch model from a checkpoint: built on the meta device, every tensor checked against
it (nanoGPT's `from_pretrained`, strictly), then assigned one by one as it is read (gpt-fast),
quantized on the way when asked, so loading never holds two copies of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import ModelLoadError
from ..weights.checkpoint import Checkpoint, check_tensors, hf_tensors
from .torch_model import Transformer
from .torch_quant import quantize_linears

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_model(
    checkpoint: Checkpoint,
    target: torch.device,
    dtype: torch.dtype,
    quantize: str | None,
    progress: Callable[[float, str], None],
) -> Transformer:
    """`checkpoint`'s model on `target` in `dtype`, its Linear layers quantized as `quantize`
    names (None: float), in eval mode; `progress(fraction, stage)` follows the tensors read."""
    if checkpoint.quantization:
        raise ModelLoadError(
            f"{checkpoint.path} is quantized in MLX's format, which only the MLX backend runs. "
            "For the torch backend use the bf16 release (add quantize='int8' or 'int4' to save "
            "memory)."
        )
    with torch.device("meta"):
        model = Transformer(checkpoint.model_config)
    expected = {name: (tuple(p.shape), "float") for name, p in model.state_dict().items()}
    check_tensors(checkpoint, expected)
    if quantize == "int4" and target.type == "cuda":
        _refuse_int4_before_ampere(target)
    with torch.device("meta"):  # empty quantized layers: the loop below fills them
        quantized = quantize_linears(model, quantize, dtype, target) if quantize else {}
    state, total = {}, len(checkpoint.tensors)
    for loaded, (hf_name, stored) in enumerate(hf_tensors(checkpoint, _read_file), start=1):
        tensor = stored.contiguous().to(device=target, dtype=dtype)
        layer = hf_name.removesuffix(".weight")
        if layer in quantized:  # quantized as read: one float tensor at a time
            buffers = quantized[layer].quantized(tensor)
            state.update({f"{layer}.{key}": value for key, value in buffers.items()})
        else:
            state[hf_name] = tensor
        progress(loaded / total, f"loading weights ({checkpoint.weight_bytes / 1e9:.1f} GB)")
    model.load_state_dict(state, strict=True, assign=True)
    del state
    return model.eval()


def _refuse_int4_before_ampere(target: torch.device) -> None:
    capability = torch.cuda.get_device_capability(target)
    if capability < (8, 0):  # PyTorch builds its int4 kernels (tinygemm) for sm_80 up
        raise ModelLoadError(
            f"int4 weights on CUDA need an Ampere or newer GPU (compute capability 8.0+); "
            f"{torch.cuda.get_device_name(target)} is {capability[0]}.{capability[1]}. "
            "Use quantize='int8' (--quantize int8) instead."
        )


def _read_file(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    with safe_open(file, framework="pt", device="cpu") as handle:
        for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
            yield name, handle.get_tensor(name)
