"""What each backend holds in memory, computed before anything is loaded: the arithmetic behind
preflight (`assembly/preflight.py`), and each backend's advice when a model does not fit.
The memory job of a backend, apart from how it runs (`registry.py`)."""

from __future__ import annotations

import logging
from typing import ClassVar

from ..weights.checkpoint import Checkpoint
from ..weights.model_config import ModelConfig
from .options import QUANTIZERS
from .registry import REGISTRY, MLXSpec, TorchSpec, on_apple_silicon

log = logging.getLogger(__name__)

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "F32": 4, "F16": 2, "BF16": 2}


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def mlx_quantized_bytes(config: ModelConfig, bits: int, group_size: int = 64) -> int:
    """mlx-lm's affine quantization: packed weights plus a bf16 scale and bias per group."""
    linear, other = config.parameter_counts()
    embedding = config.hidden_size * config.vocab_size  # quantized too
    per_param = bits / 8 + 2 * 2 / group_size
    return int((linear + embedding) * per_param + (other - embedding) * 2)


class BackendMemory:
    """What one backend holds, and how it can hold less."""

    name: ClassVar[str]

    def weights_in_memory(
        self, checkpoint: Checkpoint, dtype: str, quantize: str | None
    ) -> tuple[int, int]:
        """(bytes of weights held, bytes per KV-cache element)."""
        raise NotImplementedError

    def device_memory(self, device: str) -> tuple[int, str] | None:
        """(bytes the device can give, what that is); None: the caller uses available RAM."""
        return REGISTRY[self.name].module().device_memory(device)

    def memory_fixes(self, checkpoint: Checkpoint, quantize: str | None) -> list[str]:
        """Ways this backend can make a model fit, for preflight's refusal."""
        return []

    def holds_decode_slot(self, device: str, static_decode: str | None) -> bool:
        """Whether decoding holds a second KV cache for the window (a static slot)."""
        return False

    def warn_if_tight(self, total: int) -> None:
        """Warn (log) when a plan of `total` bytes fits but will run slowly."""


class MLXMemory(BackendMemory):
    name = "mlx"

    def weights_in_memory(self, checkpoint, dtype, quantize):
        floats = {t.dtype for t in checkpoint.tensors.values() if t.dtype in BYTES}
        # MLX keeps the stored tensors, quantized or not; the KV cache in the float type.
        return checkpoint.weight_bytes, min((BYTES[d] for d in floats), default=2)

    def memory_fixes(self, checkpoint, quantize):
        if checkpoint.quantization:
            return []
        bits = sorted(MLXSpec.conversions)
        sizes = [gigabytes(mlx_quantized_bytes(checkpoint.model_config, b)) for b in bits]
        return [
            f"an MLX {' or '.join(f'{b}-bit' for b in bits)} conversion of the model (weights "
            f"{' / '.join(sizes)}: `codestral-engine convert` or `pull --quant`)"
        ]

    def warn_if_tight(self, total: int) -> None:
        # macOS wires at most ~75% of RAM for the GPU by default; a model close to that is slow.
        if not on_apple_silicon():
            return
        module = REGISTRY[self.name].module()
        recommended, physical = module.device_memory("gpu"), module.physical_memory()
        if recommended and physical and total > 0.9 * recommended[0]:
            limit_mb = int(min(physical * 0.9, total * 1.2) / 2**20)
            log.warning(
                "The model needs %s, close to macOS's default GPU memory limit (%s): generation "
                "may be slow. Raise the limit until the next reboot with: "
                "sudo sysctl iogpu.wired_limit_mb=%d",
                gigabytes(total),
                gigabytes(recommended[0]),
                limit_mb,
            )


class TorchMemory(BackendMemory):
    name = "torch"

    def weights_in_memory(self, checkpoint, dtype, quantize):
        linear, other = checkpoint.model_config.parameter_counts()
        element = BYTES[dtype]
        if quantize is None:
            return (linear + other) * element, element
        rows = linear // checkpoint.model_config.hidden_size
        held = next(q for q in QUANTIZERS if q.name == quantize).linear_bytes(linear, rows, element)
        return held + other * element, element

    def holds_decode_slot(self, device, static_decode):
        return TorchSpec.static_decode(static_decode, device) is not None

    def memory_fixes(self, checkpoint, quantize):
        names = [q.name for q in QUANTIZERS]
        smaller = names.index(quantize) + 1 if quantize else 0
        return [
            f"{q.name} weights (quantize='{q.name}' / --quantize {q.name}: {q.share} of bf16)"
            for q in QUANTIZERS[smaller:]
        ]


MEMORY: dict[str, BackendMemory] = {memory.name: memory for memory in (MLXMemory(), TorchMemory())}
