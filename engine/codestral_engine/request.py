"""A submitted request as its caller sees it: an event stream plus a thread-safe cancel."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator

from .errors import EngineError
from .events import Completion, Event, Finished, TextDelta
from .params import GenerationParams

_ids = itertools.count(1)


class Request:
    """Iterate to receive `TextDelta` events and one final `Finished` event.

    One consumer iterates; any thread may call `cancel()`. Used as a context manager, leaving
    the block cancels the request, so abandoning a stream never leaves the model busy.
    """

    def __init__(
        self,
        prompt_token_ids: list[int],
        params: GenerationParams,
        priority: int = 0,
        session: str | None = None,
    ):
        self.id = next(_ids)
        self.prompt_token_ids = tuple(prompt_token_ids)
        self.params = params
        self.priority = priority  # scheduler.INTERACTIVE or scheduler.BATCH
        self.session = session
        self.submitted_at = time.perf_counter()
        self._events: queue.SimpleQueue[Event | BaseException] = queue.SimpleQueue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the request: within one decode step, or between prefill chunks."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[Event]:
        while True:
            item = self._events.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Finished):
                return

    def result(self) -> Completion:
        """Wait for the whole completion."""
        parts = []
        for event in self:
            if isinstance(event, TextDelta):
                parts.append(event.text)
        return Completion(
            text="".join(parts),
            finish_reason=event.finish_reason,
            usage=event.usage,
            prompt_token_ids=event.prompt_token_ids,
            completion_token_ids=event.completion_token_ids,
        )

    def __enter__(self) -> Request:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    # Worker side.
    def emit(self, event: Event) -> None:
        self._events.put(event)

    def fail(self, error: EngineError) -> None:
        self._events.put(error)
