"""One request on the worker thread: reuse the prompt cache, step the backend, stream events.

The backend yields token ids; this layer turns them into UTF-8 text deltas, applies end of
sequence, stop strings, max/min tokens and cancellation, keeps the KV cache for the next
request, and measures usage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .backend import Backend
from .events import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_MODEL_LENGTH,
    FINISH_STOP,
    Finished,
    TextDelta,
    Usage,
)
from .prompt_cache import PromptCache
from .request import Request
from .speculative import DraftStats, PromptLookup
from .stops import StopMatcher
from .tokenizer import CodestralTokenizer, StreamDecoder


class _Cancelled(Exception):
    """Raised from the prefill progress callback to abandon a request between chunks."""


@dataclass
class Runtime:
    """What the worker thread owns."""

    backend: Backend
    tokenizer: CodestralTokenizer
    prompt_cache: PromptCache
    context_length: int
    prefill_chunk: int
    # Runs waiting requests more urgent than the given one; called between steps.
    preempt: Callable[[Request], None]
    speculative: bool = True  # prompt-lookup drafts, verified in one pass (core/speculative.py)
    last_finished: Finished | None = None  # for status displays
    finish_counts: Counter = field(default_factory=Counter)  # finish reason -> requests

    def record(self, request: Request, finished: Finished) -> None:
        self.last_finished = finished
        self.finish_counts[finished.finish_reason] += 1
        request.emit(finished)


def run(request: Request, rt: Runtime) -> None:
    """Generate `request` to the end, emitting its events; the worker catches what escapes."""
    if request.cancelled:  # cancelled while queued: never touch the model
        rt.record(request, _finished(request, FINISH_CANCELLED))
        return
    generation = _Generation(request, rt)
    generation.decode()
    generation.keep_cache()
    generation.flush_text()
    rt.record(request, generation.finished())


class _Generation:
    """One request's pass through the backend: its KV cache, text decoder, stop strings and
    the tokens and timings its usage reports."""

    def __init__(self, request: Request, rt: Runtime):
        self.request, self.rt, self.params = request, rt, request.params
        self.ids = list(request.prompt_token_ids)
        kv, self.reused = rt.prompt_cache.take(self.ids)
        self.kv = kv if kv is not None else rt.backend.new_cache()
        room = rt.context_length - len(self.ids)
        asked = self.params.max_tokens
        self.limit = room if asked is None else min(asked, room)
        self.finish = FINISH_LENGTH if asked is not None and asked <= room else FINISH_MODEL_LENGTH
        self.decoder = StreamDecoder(rt.tokenizer)
        self.stops = StopMatcher(self.params.stop)
        self.sampled: list[int] = []  # every token fed back to the model, end of sequence too
        self.completion: list[int] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.stopped_by_string = False
        self.drafter = PromptLookup(self.ids) if rt.speculative else None

    def decode(self) -> None:
        """Step the backend until a stop, the limit or a cancel; set `finish`."""
        self.rt.backend.reset_peak_memory()
        steps = self.rt.backend.generate(
            self.ids[self.reused :],
            self.kv,
            self.params,
            eos_id=self.rt.tokenizer.eos_id,
            max_new_tokens=self.limit,
            prefill_chunk=self.rt.prefill_chunk,
            on_prefill=self._on_prefill,
            drafter=self.drafter,
        )
        try:
            for token in steps:
                if self._take(token):
                    break
                self.rt.preempt(self.request)
        except _Cancelled:
            self.finish = FINISH_CANCELLED
        finally:
            steps.close()

    def _on_prefill(self, _done: int, _total: int) -> None:
        if self.request.cancelled:
            raise _Cancelled
        self.rt.preempt(self.request)

    def _take(self, token: int) -> bool:
        """Take one sampled token (emitting its text); True when generation ends here."""
        self.last_at = time.perf_counter()
        self.first_at = self.first_at or self.last_at
        self.sampled.append(token)
        if token == self.rt.tokenizer.eos_id:
            self.finish = FINISH_STOP
            return True
        self.completion.append(token)
        check = len(self.completion) >= self.params.min_tokens
        text, self.stopped_by_string = self.stops.push(self.decoder.push(token), check=check)
        self.request.emit(TextDelta(text, (token,)))
        if self.stopped_by_string:
            self.finish = FINISH_STOP
            return True
        if self.request.cancelled:
            self.finish = FINISH_CANCELLED
            return True
        return False

    def keep_cache(self) -> None:
        """Hand the KV cache to the prompt cache for the next request."""
        # Verified drafts past the last token taken (a stop, a cancel) are not part of this text.
        self.kv.trim_to(min(self.kv.length, len(self.ids) + len(self.sampled)))
        # Keep the cache only after a clean exit: an error mid-step may leave layers uneven.
        self.rt.prompt_cache.put((self.ids + self.sampled)[: self.kv.length], self.kv)

    def flush_text(self) -> None:
        """Emit the text the decoder and stop matcher still hold back."""
        if self.stopped_by_string:
            return
        check = len(self.completion) >= self.params.min_tokens
        text, _ = self.stops.push(self.decoder.flush(), check=check)
        text += self.stops.flush()
        if text:
            self.request.emit(TextDelta(text, ()))

    def finished(self) -> Finished:
        decode_rate = None
        first, last = self.first_at, self.last_at
        if first is not None and last > first and len(self.sampled) > 1:
            decode_rate = (len(self.sampled) - 1) / (last - first)
        ttft = None if first is None else first - self.request.submitted_at
        return _finished(
            self.request,
            self.finish,
            completion=self.completion,
            cached=self.reused,
            ttft=ttft,
            decode_rate=decode_rate,
            peak=self.rt.backend.peak_memory(),
            drafts=self.drafter.stats if self.drafter else None,
        )


def _finished(
    request: Request,
    reason: str,
    *,
    completion: list[int] | None = None,
    cached: int = 0,
    ttft: float | None = None,
    decode_rate: float | None = None,
    peak: int = 0,
    drafts: DraftStats | None = None,
) -> Finished:
    completion = completion or []
    usage = Usage(
        prompt_tokens=len(request.prompt_token_ids),
        cached_prompt_tokens=cached,
        completion_tokens=len(completion),
        time_to_first_token_s=ttft,
        decode_tokens_per_s=decode_rate,
        peak_memory_bytes=peak,
        draft_tokens=drafts.drafted if drafts else 0,
        accepted_draft_tokens=drafts.accepted if drafts else 0,
    )
    return Finished(reason, usage, request.prompt_token_ids, tuple(completion))
