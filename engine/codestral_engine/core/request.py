"""A submitted request as its caller sees it: an event stream plus a thread-safe cancel."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from ..errors import EngineError
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
        self._lock = threading.Lock()
        self._listener: Callable[[Event | BaseException], None] | None = None

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

    async def events(self) -> AsyncIterator[Event]:
        """The same stream for asyncio code, without a thread per request.

        If the consumer stops early (a client disconnected), the request is cancelled.
        """
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        with self._lock:  # events emitted before this point are moved over first
            while not self._events.empty():
                inbox.put_nowait(self._events.get_nowait())
            self._listener = lambda item: loop.call_soon_threadsafe(inbox.put_nowait, item)
        try:
            while True:
                item = await inbox.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            self.cancel()

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
    def emit(self, event: Event | EngineError) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener(event)
            else:
                self._events.put(event)

    def fail(self, error: EngineError) -> None:
        self.emit(error)
