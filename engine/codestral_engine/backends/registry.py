"""The backend registry: everything the rest of the engine asks of a backend, declared once per
backend. preflight, hub, the CLI and `load` loop over `REGISTRY` instead of branching on names.
Specs are light: the backend's own module (and mlx or torch with it) is imported only when the
backend is used.

Adding a backend:
1. write `backends/<name>.py`: the model behind the `Backend` contract (`base.py`), a
   `load(checkpoint, progress, **options) -> Backend` and a `device_memory(device)`;
2. describe it here with a `BackendSpec` subclass (framework, install hint, load options,
   memory, hub releases) and add it to `REGISTRY`;
3. run the conformance tests (`tests/test_generation.py` and friends are parametrized over
   `REGISTRY`).
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

from ..errors import EngineError, ModelLoadError
from ..weights.checkpoint import Checkpoint

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "F32": 4, "F16": 2, "BF16": 2}
IMPORT_SHARE = 0.01  # load progress once the framework import starts
WEIGHTS_FROM = 0.05  # ...and where reading the weights begins
MISTRAL_RELEASE = "mistralai/Codestral-22B-v0.1"


def on_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


class BackendSpec:
    """What a backend is and needs, without importing it."""

    name: ClassVar[str]
    label: ClassVar[str]  # as users know it: "MLX", "PyTorch"
    framework: ClassVar[str]  # the package it imports: available means importable
    install_hint: ClassVar[str]
    load_options: ClassVar[frozenset[str]] = frozenset()  # accepted by load(): device, dtype...
    # pull: hub repository per quantization, which of them pull picks by itself (largest
    # first), and the preflight plan (`preflight.codestral_22b_plans`) each one needs.
    releases: ClassVar[dict[str, str]] = {}
    automatic: ClassVar[tuple[str, ...]] = ()
    release_plans: ClassVar[dict[str, str]] = {}

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

    def weights_in_memory(
        self, checkpoint: Checkpoint, dtype: str, quantize: str | None
    ) -> tuple[int, int]:
        """(bytes of weights held, bytes per KV-cache element) for preflight."""
        raise NotImplementedError

    def device_memory(self, device: str) -> tuple[int, str] | None:
        """(bytes the device can give, what that is); None: the caller uses available RAM."""
        return self.module().device_memory(device)

    def memory_fixes(self, checkpoint: Checkpoint, quantize: str | None) -> list[str]:
        """Ways this backend can make a model fit, for preflight's refusal."""
        return []

    def holds_decode_slot(self, device: str, static_decode: str | None) -> bool:
        """Whether decoding holds a second KV cache for the window (a static slot), for
        preflight."""
        return False

    def warn_if_tight(self, total: int) -> None:
        """Warn (log) when a plan of `total` bytes fits but will run slowly."""

    def release_note(self, quant: str) -> str:
        return ""

    def load(self, checkpoint: Checkpoint, progress: Callable[[float, str], None], **options: Any):
        """Load `checkpoint`; `progress(fraction, stage)` follows the framework import too."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - self.load_options)
        if unknown:
            takes = (
                f" (it takes {', '.join(sorted(self.load_options))})"
                if self.load_options
                else ": it runs the checkpoint as stored (convert it to change precision)"
            )
            others = [n for n, spec in REGISTRY.items() if set(unknown) <= spec.load_options]
            hint = f" Use backend={others[0]!r} for these options." if others else ""
            raise EngineError(
                f"The {self.label} backend takes no {', '.join(unknown)} option{takes}.{hint}"
            )  # fmt: skip
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
    releases: ClassVar[dict[str, str]] = {
        "4bit": "mlx-community/Codestral-22B-v0.1-4bit",
        "8bit": "mlx-community/Codestral-22B-v0.1-8bit",
        "bf16": MISTRAL_RELEASE,
    }
    # bf16 would read 3.5x the bytes of 4-bit per token: pull picks the conversions.
    automatic: ClassVar[tuple[str, ...]] = ("8bit", "4bit")
    release_plans: ClassVar[dict[str, str]] = {
        "4bit": "mlx-4bit", "8bit": "mlx-8bit", "bf16": "bf16",
    }  # fmt: skip

    def default_device(self) -> str:
        return "gpu" if on_apple_silicon() else "cpu"

    def target(self, checkpoint, device, dtype):
        return self.default_device(), "as stored"

    def weights_in_memory(self, checkpoint, dtype, quantize):
        floats = {t.dtype for t in checkpoint.tensors.values() if t.dtype in BYTES}
        # MLX keeps the stored tensors, quantized or not; the KV cache in the float type.
        return checkpoint.weight_bytes, min((BYTES[d] for d in floats), default=2)

    def memory_fixes(self, checkpoint, quantize):
        if checkpoint.quantization:
            return []
        from ..weights.preflight import gigabytes, mlx_quantized_bytes

        four, eight = (mlx_quantized_bytes(checkpoint.model_config, bits) for bits in (4, 8))
        return [
            f"an MLX 4-bit or 8-bit conversion of the model (weights {gigabytes(four)} / "
            f"{gigabytes(eight)}: `codestral-engine convert` or `pull --quant`)"
        ]

    def holds_decode_slot(self, device: str, static_decode: str | None) -> bool:
        """Whether decoding holds a second KV cache for the window (a static slot), for
        preflight."""
        return False

    def warn_if_tight(self, total: int) -> None:
        # macOS wires at most ~75% of RAM for the GPU by default; a model close to that is slow.
        if not on_apple_silicon():
            return
        module = self.module()
        recommended, physical = module.device_memory("gpu"), module.physical_memory()
        if recommended and physical and total > 0.9 * recommended[0]:
            from ..weights.preflight import gigabytes, log

            limit_mb = int(min(physical * 0.9, total * 1.2) / 2**20)
            log.warning(
                "The model needs %s, close to macOS's default GPU memory limit (%s): generation "
                "may be slow. Raise the limit until the next reboot with: "
                "sudo sysctl iogpu.wired_limit_mb=%d",
                gigabytes(total), gigabytes(recommended[0]), limit_mb,
            )  # fmt: skip


class TorchSpec(BackendSpec):
    """Our compact PyTorch model: CUDA GPUs, and CPUs (where it beats MLX's CPU backend)."""

    name = "torch"
    label = "PyTorch"
    framework = "torch"
    install_hint = "pip install torch (see README for the CUDA build)"
    load_options = frozenset({"device", "dtype", "quantize", "threads", "static_decode"})
    quantizers: ClassVar[tuple[str, ...]] = ("int8", "int4")  # weight-only, largest first
    # 8bit / 4bit: Mistral's bf16 release, held as int8 / int4 at load.
    releases: ClassVar[dict[str, str]] = {
        "bf16": MISTRAL_RELEASE, "8bit": MISTRAL_RELEASE, "4bit": MISTRAL_RELEASE
    }  # fmt: skip
    automatic: ClassVar[tuple[str, ...]] = ("bf16", "8bit", "4bit")
    release_plans: ClassVar[dict[str, str]] = {"bf16": "bf16", "8bit": "int8", "4bit": "int4"}

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

    def weights_in_memory(self, checkpoint, dtype, quantize):
        from ..weights.preflight import parameter_counts

        linear, other = parameter_counts(checkpoint.model_config)
        element = BYTES[dtype]
        if quantize == "int8":  # int8 weights plus one scale per output row
            rows = linear // checkpoint.model_config.hidden_size
            return linear + rows * element + other * element, element
        if quantize == "int4":  # two weights a byte, a bf16 scale and zero per 128 inputs
            return linear // 2 + linear // 32 + other * element, element
        return (linear + other) * element, element

    @staticmethod
    def static_decode(asked: str | None, device: str) -> str | None:
        """How decode steps run (see `backends.torch.load`): as asked, else through the static
        slot compiled with CUDA graphs on CUDA, and the dynamic step elsewhere (as fast on the
        CPU: bench/README.md). None: the dynamic step."""
        chosen = asked or ("reduce-overhead" if device.startswith("cuda") else "off")
        return None if chosen == "off" else chosen

    def holds_decode_slot(self, device, static_decode):
        return self.static_decode(static_decode, device) is not None

    def memory_fixes(self, checkpoint, quantize):
        smaller = self.quantizers.index(quantize) + 1 if quantize else 0
        share = {"int8": "about half", "int4": "about a quarter"}
        return [f"{kind} weights (quantize='{kind}' / --quantize {kind}: {share[kind]} of bf16)"
                for kind in self.quantizers[smaller:]]  # fmt: skip

    def release_note(self, quant: str) -> str:
        kind = self.release_plans.get(quant)
        if kind not in self.quantizers:
            return ""
        return f"bf16 weights, held as {kind} at load: serve with --quantize {kind}."


REGISTRY: dict[str, BackendSpec] = {spec.name: spec for spec in (MLXSpec(), TorchSpec())}


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
