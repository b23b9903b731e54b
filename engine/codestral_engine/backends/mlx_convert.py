"""`codestral-engine convert`: any local Codestral checkpoint to the MLX layout, quantized with
mlx-lm's own quantization (`quantize_model`, `save_model`, `save_config`), as mlx-community's
conversions are made. The weights are read through the MLX backend's loader, so a Mistral-native
release (params.json, consolidated.safetensors) converts as well as a Hugging Face one.

The report compares the logits of a probe prompt before and after quantization.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlx_lm.utils import quantize_model, save_config, save_model

from ..core.tokenizer import CodestralTokenizer, find_tokenizer_file
from ..errors import ModelLoadError
from ..weights.checkpoint import Checkpoint
from .mlx import load

PROBE = (
    "import numpy as np\n\ndef moving_average(values, window):\n"
    '    """Mean of each run of `window` values."""\n'
)


@dataclass(frozen=True)
class ConversionReport:
    bits: int
    group_size: int
    weight_bytes: int
    relative_error: float  # ||logits_q - logits|| / ||logits|| over the probe
    max_abs_error: float
    top1_agreement: float  # share of probe positions whose argmax is unchanged


def convert(
    checkpoint: Checkpoint,
    dst: Path,
    bits: int,
    group_size: int = 64,
    progress: Callable[[float, str], None] = lambda *_: None,
) -> ConversionReport:
    if checkpoint.quantization:
        raise ModelLoadError(
            f"{checkpoint.path} is already quantized; convert the original bf16 release instead."
        )
    if dst.exists() and any(dst.iterdir()):
        raise ModelLoadError(f"{dst} is not empty; choose a new directory for the conversion.")
    tokenizer_file = find_tokenizer_file(checkpoint.path)
    probe = CodestralTokenizer(tokenizer_file).encode_fim(PROBE, "\n")
    backend = load(checkpoint, lambda f, stage: progress(0.6 * f, stage))
    reference = backend.logits(probe)[0]
    progress(0.7, f"quantizing to {bits}-bit (mlx-lm)")
    model, config = quantize_model(backend.model, dict(checkpoint.config), group_size, bits)
    quantized = backend.logits(probe)[0]
    progress(0.85, "saving")
    dst.mkdir(parents=True, exist_ok=True)
    save_model(dst, model)
    save_config(config, dst / "config.json")
    shutil.copyfile(tokenizer_file, dst / tokenizer_file.name)
    progress(1.0, "done")
    diff = quantized - reference
    weight_bytes = sum(f.stat().st_size for f in dst.glob("*.safetensors"))
    return ConversionReport(
        bits=bits,
        group_size=group_size,
        weight_bytes=weight_bytes,
        relative_error=float(np.linalg.norm(diff) / np.linalg.norm(reference)),
        max_abs_error=float(np.abs(diff).max()),
        top1_agreement=float((quantized.argmax(-1) == reference.argmax(-1)).mean()),
    )
