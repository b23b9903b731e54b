"""Backend selection. A backend module (and mlx or torch with it) is imported only when chosen."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..checkpoint import Checkpoint
from ..errors import EngineError, ModelLoadError
from .base import Backend, KVState

BACKENDS = ("mlx",)
_INSTALL_HINT = {"mlx": "pip install 'mlx[cpu]' mlx-lm (Linux) or pip install mlx mlx-lm (macOS)"}

__all__ = ["BACKENDS", "Backend", "KVState", "load_backend", "resolve_backend"]


def resolve_backend(name: str) -> str:
    """The concrete backend for `name` ("auto" picks the best one this machine has)."""
    if name == "auto":
        return "mlx"
    if name not in BACKENDS:
        raise EngineError(f"Unknown backend {name!r}. Choose one of: auto, {', '.join(BACKENDS)}.")
    return name


def load_backend(
    checkpoint: Checkpoint,
    name: str = "auto",
    progress: Callable[[float, str], None] | None = None,
) -> Backend:
    """Load `checkpoint` on the chosen backend; `progress(fraction, stage)` reports the load."""
    concrete = resolve_backend(name)
    try:
        module = importlib.import_module(f"{__name__}.{concrete}")
    except ImportError as exc:
        raise ModelLoadError(
            f"The {concrete} backend cannot be imported ({exc}). Install it: "
            f"{_INSTALL_HINT[concrete]}."
        ) from exc
    return module.load(checkpoint, progress or (lambda fraction, stage: None))
