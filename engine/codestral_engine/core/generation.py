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
    ids = list(request.prompt_token_ids)
    params = request.params
    if request.cancelled:  # cancelled while queued: never touch the model
        rt.record(request, _finished(request, FINISH_CANCELLED))
        return

    kv, reused = rt.prompt_cache.take(ids)
    kv = kv if kv is not None else rt.backend.new_cache()
    room = rt.context_length - len(ids)
    limit = room if params.max_tokens is None else min(params.max_tokens, room)
    decoder = StreamDecoder(rt.tokenizer)
    stops = StopMatcher(params.stop)
    eos = rt.tokenizer.eos_id
    sampled: list[int] = []  # every token fed back to the model, end of sequence included
    completion: list[int] = []
    first_at = last_at = None
    finish = (
        FINISH_LENGTH
        if params.max_tokens is not None and params.max_tokens <= room
        else FINISH_MODEL_LENGTH
    )

    def on_prefill(_done: int, _total: int) -> None:
        if request.cancelled:
            raise _Cancelled
        rt.preempt(request)

    drafter = PromptLookup(ids) if rt.speculative else None
    rt.backend.reset_peak_memory()
    steps = rt.backend.generate(
        ids[reused:],
        kv,
        params,
        eos_id=eos,
        max_new_tokens=limit,
        prefill_chunk=rt.prefill_chunk,
        on_prefill=on_prefill,
        drafter=drafter,
    )
    stopped_by_string = False
    try:
        for token in steps:
            last_at = time.perf_counter()
            first_at = first_at or last_at
            sampled.append(token)
            if token == eos:
                finish = FINISH_STOP
                break
            completion.append(token)
            check_stops = len(completion) >= params.min_tokens
            text, stopped_by_string = stops.push(decoder.push(token), check=check_stops)
            request.emit(TextDelta(text, (token,)))
            if stopped_by_string:
                finish = FINISH_STOP
                break
            if request.cancelled:
                finish = FINISH_CANCELLED
                break
            rt.preempt(request)
    except _Cancelled:
        finish = FINISH_CANCELLED
    finally:
        steps.close()
    # Verified drafts past the last token taken (a stop, a cancel) are not part of this text.
    kv.trim_to(min(kv.length, len(ids) + len(sampled)))
    # Keep the cache only after a clean exit: an error mid-step may leave layers uneven.
    rt.prompt_cache.put((ids + sampled)[: kv.length], kv)

    if not stopped_by_string:
        text, _ = stops.push(decoder.flush(), check=len(completion) >= params.min_tokens)
        text += stops.flush()
        if text:
            request.emit(TextDelta(text, ()))
    decode_rate = None
    if first_at is not None and last_at > first_at and len(sampled) > 1:
        decode_rate = (len(sampled) - 1) / (last_at - first_at)
    ttft = None if first_at is None else first_at - request.submitted_at
    peak = rt.backend.peak_memory()
    rt.record(
        request,
        _finished(
            request, finish, completion=completion, cached=reused, ttft=ttft,
            decode_rate=decode_rate, peak=peak, drafts=drafter.stats if drafter else None,
        ),
    )  # fmt: skip


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
