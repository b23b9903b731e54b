"""What a backend takes at load, each declared once: the load options (`load(device=...)`, a
backend's check of what it accepts, the command line's `--device`) and the torch backend's
weight quantizers (`quantize=`, `--quantize`, preflight's arithmetic and advice, pull's note).

Adding a load option: declare it here and list it in the specs that take it (`registry.py`);
the backend's `load` receives it by name. Adding a quantizer: declare it in `QUANTIZERS` and
implement it in `torch_quant.quantize_linears`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


def positive_int(text: str) -> int:
    """An argument parser's type for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class LoadOption:
    """An option `load` hands to the backend: `load(name=...)` and `--name` on the command line."""

    name: str
    help: str
    type: Callable[[str], object] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Quantizer:
    """A weight-only quantization the torch backend applies as it reads bf16 weights."""

    name: str  # quantize="int8", --quantize int8
    share: str  # its weights against bf16's, in words, for preflight's advice
    # Bytes held for the Linear layers: (their parameters, their output rows, bytes per float).
    linear_bytes: Callable[[int, int, int], int]


QUANTIZERS = (  # largest first
    # int8 weights plus one float scale per output row.
    Quantizer("int8", "about half", lambda linear, rows, element: linear + rows * element),
    # Two weights a byte, a bf16 scale and zero per 128 inputs.
    Quantizer("int4", "about a quarter", lambda linear, rows, element: linear // 2 + linear // 32),
)

DEVICE = LoadOption("device", "torch: cuda, cuda:N or cpu (default: cuda if present)")
DTYPE = LoadOption("dtype", "torch precision", choices=("bfloat16", "float16", "float32"))
QUANTIZE = LoadOption(
    "quantize",
    f"torch: weights held as {' / '.join(q.name for q in QUANTIZERS)} at load",
    choices=tuple(q.name for q in QUANTIZERS),
)
THREADS = LoadOption(
    "threads",
    "torch on the CPU: compute threads (default: $CODESTRAL_ENGINE_THREADS, else the physical "
    "cores but one, left to Jupyter and the browser)",
    type=positive_int,
)
STATIC_DECODE = LoadOption(
    "static_decode",
    "torch: decode steps through a preallocated KV slot, compiled by torch.compile as named "
    "(reduce-overhead: inductor and CUDA graphs; aot_eager; eager: not compiled), or off for "
    "the dynamic step (default: reduce-overhead on CUDA, off on the CPU)",
    metavar="MODE",
)
