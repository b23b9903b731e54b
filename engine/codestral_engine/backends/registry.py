"""The backend registry: how each backend runs, declared once per backend. `load`, the CLI and
the tests loop over `REGISTRY` instead of branching on names. Specs are light: the backend's own
module (and mlx or torch with it) is imported only when the backend is used.

A backend is described in three places, one job each: here, how it runs (framework, install
hint, the load options it takes, its device and precision); in `memory.py`, what it holds
(preflight's arithmetic); in `assembly/releases.py`, the hub releases `pull` fetches for it.

Adding a backend:
1. write `backends/<name>.py`: the model behind the `Backend` contract (`core/backend.py`), a
   `load(checkpoint, progress, **options) -> Backend` and a `device_memory(device)`;
2. describe it with a `BackendSpec` subclass here, its memory in `memory.py` and its releases
   in `assembly/releases.py`;
3. run the conformance tests (`tests/test_generation.py` and friends are parametrized over
   `REGISTRY`).
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

from ..errors import EngineError, ModelLoadError
from ..weights.checkpoint import Checkpoint
from .options import DEVICE, DTYPE, QUANTIZE, QUANTIZERS, STATIC_DECODE, THREADS, LoadOption

IMPORT_SHARE = 0.01  # load progress once the framework import starts
WEIGHTS_FROM = 0.05  # ...and where reading the weights begins


def on_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


class BackendSpec:
    """How a backend runs, without importing it."""

    name: ClassVar[str]
    label: ClassVar[str]  # as users know it: "MLX", "PyTorch"
    framework: ClassVar[str]  # the package it imports: available means importable
    install_hint: ClassVar[str]
    options: ClassVar[tuple[LoadOption, ...]] = ()  # what its load() takes (`options.py`)

    def available(self) -> bool:
        return importlib.util.find_spec(self.framework) is not None

    def module(self) -> ModuleType:
        """The backend's implementation (imports its framework)."""
        try:
            return importlib.import_module(f"{__package__}.{self.name}")
        except ImportError as exc:
            raise ModelLoadError(
                f"The {self.label} backend cannot be imported ({exc}). Install it: "
                f"{self.install_hint}."
            ) from exc

    def default_device(self) -> str:
        raise NotImplementedError

    def target(self, checkpoint: Checkpoint, device: str | None, dtype: str | None) -> tuple:
        """(device, compute dtype) it will use for `checkpoint`, before anything is loaded."""
        raise NotImplementedError

    def accepted(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options given (not None), or an error naming those it does not take and the
        backend that does, or the value a declared option does not take."""
        given = {k: v for k, v in options.items() if v is not None}
        takes = self.option_names()
        unknown = sorted(set(given) - takes)
        if unknown:
            what = (
                f" (it takes {', '.join(sorted(takes))})"
                if takes
                else ": it runs the checkpoint as stored (convert it to change precision)"
            )
            others = [n for n, spec in REGISTRY.items() if set(unknown) <= spec.option_names()]
            hint = f" Use backend={others[0]!r} for these options." if others else ""
            raise EngineError(
                f"The {self.label} backend takes no {', '.join(unknown)} option{what}.{hint}"
            )
        for option in self.options:
            value = given.get(option.name)
            if value is not None and option.choices and value not in option.choices:
                *most, last = map(repr, option.choices)
                raise ModelLoadError(
                    f"{option.name} must be {', '.join(most)} or {last} (or None: the default), "
                    f"got {value!r}."
                )
        return given

    def option_names(self) -> set[str]:
        return {option.name for option in self.options}

    def load(self, checkpoint: Checkpoint, progress: Callable[[float, str], None], **options: Any):
        """Load `checkpoint`; `progress(fraction, stage)` follows the framework import too."""
        given = self.accepted(options)
        progress(IMPORT_SHARE, f"starting {self.name}")
        module = self.module()

        def weights(fraction: float, stage: str) -> None:
            progress(WEIGHTS_FROM + (1.0 - WEIGHTS_FROM) * fraction, stage)

        return module.load(checkpoint, weights, **given)


class MLXSpec(BackendSpec):
    """mlx-lm's model in unified memory on Apple Silicon (Metal); MLX's CPU backend elsewhere."""

    name = "mlx"
    label = "MLX"
    framework = "mlx"
    install_hint = "pip install 'mlx[cpu]' mlx-lm (Linux) or pip install mlx mlx-lm (macOS)"
    conversions: ClassVar[tuple[int, ...]] = (8, 4)  # bits of `convert`'s quantizations

    def default_device(self) -> str:
        return "gpu" if on_apple_silicon() else "cpu"

    def target(self, checkpoint, device, dtype):
        return self.default_device(), "as stored"


class TorchSpec(BackendSpec):
    """Our compact PyTorch model: CUDA GPUs, and CPUs (where it beats MLX's CPU backend)."""

    name = "torch"
    label = "PyTorch"
    framework = "torch"
    install_hint = "pip install torch (see README for the CUDA build)"
    options = (DEVICE, DTYPE, QUANTIZE, THREADS, STATIC_DECODE)
    quantizers: ClassVar[tuple[str, ...]] = tuple(q.name for q in QUANTIZERS)

    def default_device(self) -> str:
        return self.module().default_device()

    def target(self, checkpoint, device, dtype):
        target = device or self.default_device()
        return target, dtype or self.default_dtype(checkpoint, target)

    @staticmethod
    def default_dtype(checkpoint: Checkpoint, device: str) -> str:
        """bfloat16 on CUDA; on the CPU the checkpoint's own float type (float32 if half)."""
        if device.startswith("cuda"):
            return "bfloat16"
        stored = {t.dtype for t in checkpoint.tensors.values()}
        return "bfloat16" if stored == {"BF16"} else "float32"

    @staticmethod
    def static_decode(asked: str | None, device: str) -> str | None:
        """How decode steps run (see `backends.torch.load`): as asked, else through the static
        slot compiled with CUDA graphs on CUDA, and the dynamic step elsewhere (as fast on the
        CPU: bench/README.md). None: the dynamic step."""
        chosen = asked or ("reduce-overhead" if device.startswith("cuda") else "off")
        return None if chosen == "off" else chosen


REGISTRY: dict[str, BackendSpec] = {spec.name: spec for spec in (MLXSpec(), TorchSpec())}
# Every load option some backend takes, once each, in declaration order (the CLI's flags).
LOAD_OPTIONS: tuple[LoadOption, ...] = tuple(
    {option.name: option for spec in REGISTRY.values() for option in spec.options}.values()
)


def resolve(name: str, checkpoint: Checkpoint | None = None) -> BackendSpec:
    """The backend for `name`.

    "auto": MLX on Apple Silicon (unified memory, Metal) and for MLX-quantized checkpoints;
    otherwise PyTorch when installed (CUDA if there is a GPU, else the CPU, where it is much
    faster than MLX's CPU backend); otherwise MLX.
    """
    if name == "auto":
        if on_apple_silicon() or (checkpoint is not None and checkpoint.quantization):
            return REGISTRY["mlx"]
        return REGISTRY["torch"] if REGISTRY["torch"].available() else REGISTRY["mlx"]
    if name not in REGISTRY:
        raise EngineError(f"Unknown backend {name!r}. Choose one of: auto, {', '.join(REGISTRY)}.")
    return REGISTRY[name]
