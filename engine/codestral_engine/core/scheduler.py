"""Which request the worker runs next: interactive before batch, first come first served within.

Interactive requests (FIM: ghost text, the magic's gap filling) are what a user is waiting on
while typing; batch requests (chat answers) take seconds anyway. The worker takes the most
urgent request, and a running batch request lets every waiting interactive one run between two
of its decode steps (or prefill chunks) — so a keystroke never waits behind a long answer for
more than one step. The queue is bounded: a full queue is refused at once, never left to grow.
"""

from __future__ import annotations

import threading
from collections import deque

from ..errors import EngineClosedError, QueueFullError
from .request import Request

INTERACTIVE = 0
BATCH = 1
PRIORITIES = {"interactive": INTERACTIVE, "batch": BATCH}


class Scheduler:
    def __init__(self, max_queued: int):
        self.max_queued = max_queued
        self._queues: dict[int, deque[Request]] = {INTERACTIVE: deque(), BATCH: deque()}
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def put(self, request: Request) -> None:
        with self._cond:
            if self._closed:
                raise EngineClosedError(
                    "The engine is closed. Load the model again with codestral_engine.load()."
                )
            if sum(len(q) for q in self._queues.values()) >= self.max_queued:
                raise QueueFullError(
                    f"The engine already has {self.max_queued} requests waiting. Retry in a "
                    "moment, or cancel requests you no longer need.",
                    retry_after_s=1,
                )
            self._queues[request.priority].append(request)
            self._cond.notify()

    def get(self) -> Request | None:
        """The most urgent request, waiting for one; None once closed and drained."""
        with self._cond:
            while True:
                for priority in sorted(self._queues):
                    if self._queues[priority]:
                        return self._queues[priority].popleft()
                if self._closed:
                    return None
                self._cond.wait()

    def pop_more_urgent(self, priority: int) -> Request | None:
        """A waiting request more urgent than `priority`, without waiting."""
        with self._cond:
            for p in sorted(self._queues):
                if p < priority and self._queues[p]:
                    return self._queues[p].popleft()
            return None

    def close(self) -> list[Request]:
        """Refuse new requests; returns those still waiting (the worker will still drain them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            return [r for q in self._queues.values() for r in q]
