"""Backend selection. A backend module (and mlx or torch with it) is imported only when chosen."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from collections.abc import Callable
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import EngineError, ModelLoadError
from .base import Backend, KVState

BACKENDS = ("mlx", "torch")
_INSTALL_HINT = {
    "mlx": "pip install 'mlx[cpu]' mlx-lm (Linux) or pip install mlx mlx-lm (macOS)",
    "torch": "pip install torch (see README for the CUDA build)",
}

__all__ = ["BACKENDS", "Backend", "KVState", "load_backend", "resolve_backend", "target_of"]


def resolve_backend(name: str, checkpoint: Checkpoint | None = None) -> str:
    """The concrete backend for `name`.

    "auto": MLX on Apple Silicon (unified memory, Metal) and for MLX-quantized checkpoints;
    otherwise PyTorch when installed (CUDA if there is a GPU, else the CPU, where it is much
    faster than MLX's CPU backend); otherwise MLX.
    """
    if name == "auto":
        apple = sys.platform == "darwin" and platform.machine() == "arm64"
        if apple or (checkpoint is not None and checkpoint.quantization):
            return "mlx"
        return "torch" if importlib.util.find_spec("torch") is not None else "mlx"
    if name not in BACKENDS:
        raise EngineError(f"Unknown backend {name!r}. Choose one of: auto, {', '.join(BACKENDS)}.")
    return name


def target_of(
    concrete: str, checkpoint: Checkpoint, device: str | None, dtype: str | None
) -> tuple[str, str]:
    """(device, compute dtype) a backend will use, before anything is loaded."""
    if concrete == "torch":
        from .torch import default_device, default_dtype

        target = device or str(default_device())
        return target, dtype or default_dtype(checkpoint, target)
    apple = sys.platform == "darwin" and platform.machine() == "arm64"
    return ("gpu" if apple else "cpu"), "as stored"


IMPORT_SHARE = 0.01  # load progress once the framework import starts
WEIGHTS_FROM = 0.05  # ...and where reading the weights begins


def load_backend(
    checkpoint: Checkpoint,
    name: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    **options: Any,
) -> Backend:
    """Load `checkpoint` on the chosen backend; `progress(fraction, stage)` reports the load.

    `options` (device, dtype, quantize) are the torch backend's; MLX takes its precision and
    quantization from the checkpoint itself.
    """
    concrete = resolve_backend(name, checkpoint)
    given = {k: v for k, v in options.items() if v is not None}
    if concrete == "mlx" and given:
        raise EngineError(
            f"The MLX backend takes no {', '.join(sorted(given))} option: it runs the checkpoint "
            "as stored (convert it to change precision). Use backend='torch' for these options."
        )
    report = progress or (lambda fraction, stage: None)
    # Importing the framework takes seconds before the first weight is read: say so.
    report(IMPORT_SHARE, f"starting {concrete}")
    try:
        module = importlib.import_module(f"{__name__}.{concrete}")
    except ImportError as exc:
        raise ModelLoadError(
            f"The {concrete} backend cannot be imported ({exc}). Install it: "
            f"{_INSTALL_HINT[concrete]}."
        ) from exc

    def weights(fraction: float, stage: str) -> None:
        report(WEIGHTS_FROM + (1.0 - WEIGHTS_FROM) * fraction, stage)

    return module.load(checkpoint, weights, **given)
