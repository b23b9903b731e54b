"""The narrow contract every backend honours (`backends/` implement it); the engine, prompt cache
and tests share the rest. Everything the engine and the server ask of a backend is here.

A backend owns the model weights, its KV-cache type and its step loop. It knows nothing of
requests, text, stop strings or queues. The engine calls it from one worker thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from .params import GenerationParams
from .speculative import PromptLookup

# Called after each prefill chunk with (tokens processed, tokens to process); it may raise to
# abandon the request between chunks.
PrefillProgress = Callable[[int, int], None]


def prefill_passes(total: int, chunk: int, *, to_last_token: bool = False) -> Iterator[int]:
    """Sizes of the prompt passes before the first decode step, which reads the rest: chunks of
    `chunk` tokens (a cancellation and preemption point after each), then a last part of up to
    1.5 chunks, which the first step reads with its token. Every pass reads all the weights,
    so a small remainder is not a pass of its own (measured on the CPU: a 115-token pass after
    a 512-token one cost a third of it). `to_last_token`: leave the first step only the last
    token.
    """
    done, last = 0, 1 if to_last_token else chunk + chunk // 2
    while total - done > last:
        n = min(chunk, total - done - 1)
        yield n
        done += n


class KVState(Protocol):
    """The KV cache of one token sequence."""

    @property
    def length(self) -> int:
        """Number of tokens whose keys/values the cache holds."""

    @property
    def nbytes(self) -> int:
        """Memory the cache occupies."""

    def trim_to(self, n: int) -> None:
        """Forget every token after the first `n`, in place."""

    def prefix_copy(self, n: int) -> KVState:
        """A new cache with the first `n` tokens; writing to it never changes this one."""


class Backend(Protocol):
    """What the engine needs from a model runtime."""

    name: str  # "mlx", "torch"
    device: str  # "cpu", "gpu", "cuda:0", ...
    speculates: bool  # speculative decoding by default: where bench_speculative shows it wins
    threads: int | None  # CPU compute threads it runs on; None where it does not set them
    # Set by the engine: the most tokens one request holds (its context window), so caches
    # the backend preallocates never outgrow it. None until the engine says.
    slot_limit: int | None

    def new_cache(self) -> KVState:
        """An empty KV cache for this model."""

    def generate(
        self,
        tokens: list[int],
        cache: KVState,
        params: GenerationParams,
        *,
        eos_id: int,
        max_new_tokens: int,
        prefill_chunk: int,
        on_prefill: PrefillProgress,
        drafter: PromptLookup | None = None,
    ) -> Iterator[int]:
        """Prefill `tokens` after what `cache` already holds, then yield sampled token ids.

        End of sequence is suppressed until `params.min_tokens` tokens were produced; at most
        `max_new_tokens` are yielded. The caller closes the iterator to stop early; the cache
        then holds every token that was fed to the model (see `KVState.length`), which with a
        `drafter` (speculative decoding, `core/speculative.py`) may run past the last token
        the caller took.
        """

    def logits(self, tokens: list[int]) -> object:
        """Full-sequence logits (1, T, vocab) without a cache, for parity tests and tools."""

    def reset_peak_memory(self) -> None: ...

    def peak_memory(self) -> int:
        """Bytes at the high-water mark since the last reset."""

    def release_thread(self) -> None:
        """Free per-thread runtime state; called by the worker thread just before it ends."""
