"""`load`: a model directory (or hub id) to a running `Engine`. Checks the checkpoint and its
tokenizer, chooses the backend, refuses a model that will not fit (preflight), then loads the
backend with the options it takes (`backends/options.py`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import BackendSpec, load_backend, resolve
from ..backends.memory import MEMORY
from ..backends.options import DEVICE, DTYPE, QUANTIZE, STATIC_DECODE
from ..core.engine import (
    DEFAULT_MAX_QUEUED,
    DEFAULT_PREFILL_CHUNK,
    DEFAULT_PROMPT_CACHE_BYTES,
    DEFAULT_PROMPT_CACHE_ENTRIES,
    Engine,
)
from ..core.tokenizer import CodestralTokenizer, find_tokenizer_file
from ..errors import EngineError, ModelLoadError
from ..weights.checkpoint import Checkpoint, inspect
from . import preflight as memory
from .hub import resolve as resolve_model

# (fraction done in [0, 1], what is happening) while a model loads.
LoadProgress = Callable[[float, str], None]


def load(
    path: str | Path,
    backend: str = "auto",
    *,
    progress: LoadProgress | None = None,
    context_length: int | None = None,
    preflight: bool = True,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
    prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
    max_queued: int = DEFAULT_MAX_QUEUED,
    speculative: bool | None = None,
    **options: Any,
) -> Engine:
    """Load a Codestral model directory (MLX, Hugging Face or Mistral-native layout).

    `progress(fraction, stage)` is called as loading advances. `backend`: "auto" (MLX on Apple
    Silicon, else PyTorch: CUDA or CPU), "mlx" or "torch". `options` are the backend's load
    options (`backends/options.py`; all torch's): `device` ("cuda", "cuda:1", "cpu"), `dtype`
    ("bfloat16", "float16", "float32"), `quantize` ("int8", "int4"), `threads` (CPU compute
    threads) and `static_decode` (decode through a preallocated KV slot, compiled: on CUDA by
    default; see `backends.torch.load`); one the backend does not take is an `EngineError`.
    `speculative`: prompt-lookup speculative decoding (drafts from the request's own text,
    verified in one pass; greedy output unchanged); False decodes one token per step; None
    (default) uses it where it was measured to win: the torch backend, not MLX on the CPU.
    `context_length` caps the window (and the memory its KV cache needs). With `preflight`, a
    model that will not fit in memory is refused before loading, with the numbers and the fix.
    """
    report = progress or (lambda fraction, stage: None)
    report(0.0, "checking the checkpoint")
    checkpoint = inspect(resolve_model(path))  # a hub id loads from the local cache
    tokenizer = _tokenizer(checkpoint)
    if context_length is not None and context_length < 2:
        raise EngineError(f"context_length must be at least 2, got {context_length}.")
    window = min(context_length or checkpoint.context_length, checkpoint.context_length)
    spec = resolve(backend, checkpoint)
    given = spec.accepted(options)
    if preflight:
        _preflight(checkpoint, spec, window, given)
    engine = Engine(
        load_backend(checkpoint, spec.name, report, **given),
        tokenizer,
        checkpoint,
        prefill_chunk=prefill_chunk,
        prompt_cache_bytes=prompt_cache_bytes,
        prompt_cache_entries=prompt_cache_entries,
        max_queued=max_queued,
        context_length=window,
        speculative=speculative,
    )
    report(1.0, "ready")
    return engine


def _tokenizer(checkpoint: Checkpoint) -> CodestralTokenizer:
    tokenizer = CodestralTokenizer(find_tokenizer_file(checkpoint.path))
    if tokenizer.vocab_size != checkpoint.model_config.vocab_size:
        raise ModelLoadError(
            f"The tokenizer {tokenizer.path.name} has {tokenizer.vocab_size} tokens but the model "
            f"in {checkpoint.path} expects {checkpoint.model_config.vocab_size}. Use the tokenizer "
            "released with these weights."
        )
    return tokenizer


def _preflight(
    checkpoint: Checkpoint, spec: BackendSpec, window: int, options: dict[str, Any]
) -> None:
    """Refuse, before any weight is read, a model that will not fit in `window` tokens."""
    quantize = options.get(QUANTIZE.name)
    target, compute = spec.target(checkpoint, options.get(DEVICE.name), options.get(DTYPE.name))
    static = MEMORY[spec.name].holds_decode_slot(target, options.get(STATIC_DECODE.name))
    need = memory.plan(checkpoint, spec.name, compute, quantize, window, static)
    memory.check(checkpoint, spec.name, target, need, quantize)
