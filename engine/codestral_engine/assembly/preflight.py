"""Will the model fit? Estimated before loading, so a user is told in a second, not after
minutes of loading and an out-of-memory crash.

Estimate: the weights as the backend will hold them, plus the KV cache of a full context window,
plus a margin for activations. Available: Apple unified memory's recommended working set (MLX
on Metal), free device memory (CUDA), or available RAM (CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backends.memory import MEMORY, gigabytes, mlx_quantized_bytes
from ..backends.options import QUANTIZERS
from ..backends.registry import MLXSpec
from ..errors import ModelLoadError
from ..weights.checkpoint import CODESTRAL_22B_CONFIG, Checkpoint

ACTIVATION_MARGIN = 0.10  # of the weights: activations, allocator slack, runtime buffers


class InsufficientMemoryError(ModelLoadError):
    """The model will not fit in the memory this device can give."""


@dataclass(frozen=True)
class MemoryPlan:
    weight_bytes: int
    kv_bytes_per_token: int
    context_length: int

    @property
    def kv_bytes(self) -> int:
        return self.kv_bytes_per_token * self.context_length

    @property
    def total(self) -> int:
        return int(self.weight_bytes * (1 + ACTIVATION_MARGIN)) + self.kv_bytes

    def with_context(self, context_length: int) -> MemoryPlan:
        return MemoryPlan(self.weight_bytes, self.kv_bytes_per_token, context_length)


def codestral_22b_plans(context_length: int) -> dict[str, MemoryPlan]:
    """What each published form of Codestral-22B needs, computed before anything is downloaded:
    "bf16" (torch or MLX), each torch quantizer's ("int8", "int4": quantized at load) and each
    MLX conversion's ("mlx-8bit", "mlx-4bit")."""
    checkpoint = Checkpoint(Path("/nowhere"), "hf", CODESTRAL_22B_CONFIG, {})
    bf16 = plan(checkpoint, "torch", "bfloat16", None, context_length)
    plans = {"bf16": bf16}
    for kind in (quantizer.name for quantizer in QUANTIZERS):
        plans[kind] = plan(checkpoint, "torch", "bfloat16", kind, context_length)
    for bits in MLXSpec.conversions:
        weights = mlx_quantized_bytes(checkpoint.model_config, bits)
        plans[f"mlx-{bits}bit"] = MemoryPlan(weights, bf16.kv_bytes_per_token, context_length)
    return plans


def plan(
    checkpoint: Checkpoint,
    backend: str,
    dtype: str,
    quantize: str | None,
    context_length: int,
    static_slot: bool = False,
) -> MemoryPlan:
    """What `backend` will hold for this checkpoint in `dtype` (torch) or as stored (MLX).
    `static_slot` (torch's static decode step): the window's KV twice, the request's cache
    and the slot the step decodes in."""
    weights, element = MEMORY[backend].weights_in_memory(checkpoint, dtype, quantize)
    kv_per_token = checkpoint.model_config.kv_values_per_token * element
    return MemoryPlan(weights, kv_per_token * (2 if static_slot else 1), context_length)


def available_memory(backend: str, device: str) -> tuple[int, str]:
    """(bytes this device can give the model, what that number is)."""
    known = MEMORY[backend].device_memory(device)
    if known is not None:
        return known
    import psutil

    return int(psutil.virtual_memory().available), "available RAM"


def check(
    checkpoint: Checkpoint, backend: str, device: str, memory_plan: MemoryPlan, quantize: str | None
) -> None:
    """Raise `InsufficientMemoryError`, with the numbers and the fixes, if the plan does not fit."""
    memory = MEMORY[backend]
    have, what = available_memory(backend, device)
    if memory_plan.total <= have:
        memory.warn_if_tight(memory_plan.total)
        return
    fixes = []
    shorter = next(
        (
            n
            for n in (16384, 8192, 4096, 2048)
            if n < memory_plan.context_length and memory_plan.with_context(n).total <= have
        ),
        None,
    )
    if shorter:
        needs = gigabytes(memory_plan.with_context(shorter).total)
        fixes.append(f"a shorter context (context_length={shorter}: {needs})")
    fixes += memory.memory_fixes(checkpoint, quantize)
    fixes.append("closing other programs that hold memory")
    raise InsufficientMemoryError(
        f"The model in {checkpoint.path} needs about {gigabytes(memory_plan.total)} (weights "
        f"{gigabytes(memory_plan.weight_bytes)} + KV cache for {memory_plan.context_length} "
        f"tokens {gigabytes(memory_plan.kv_bytes)} + {ACTIVATION_MARGIN:.0%} margin), but this "
        f"machine can give {gigabytes(have)} ({what}). Try {'; or '.join(fixes)}. "
        "(preflight=False skips this check.)"
    )
