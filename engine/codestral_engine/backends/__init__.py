"""The backends implementing the contract of `core/backend.py`, chosen through the registry
(`registry.py`): a backend module (and mlx or torch with it) is imported only when chosen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.backend import Backend
from ..weights.checkpoint import Checkpoint
from .registry import LOAD_OPTIONS, REGISTRY, BackendSpec, resolve

BACKENDS = tuple(REGISTRY)

__all__ = [
    "BACKENDS", "LOAD_OPTIONS", "REGISTRY", "BackendSpec", "load_backend", "resolve",
    "resolve_backend",
]  # fmt: skip


def resolve_backend(name: str, checkpoint: Checkpoint | None = None) -> str:
    """The concrete backend's name for `name` ("auto", "mlx", "torch"); see `registry.resolve`."""
    return resolve(name, checkpoint).name


def load_backend(
    checkpoint: Checkpoint,
    name: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    **options: Any,
) -> Backend:
    """Load `checkpoint` on the chosen backend; `progress(fraction, stage)` reports the load.

    `options` are the load options the backend's spec takes (`options.py`: torch's device,
    dtype, quantize...); MLX takes its precision and quantization from the checkpoint itself.
    """
    spec = resolve(name, checkpoint)
    return spec.load(checkpoint, progress or (lambda fraction, stage: None), **options)
