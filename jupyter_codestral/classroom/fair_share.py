"""Sharing the upstream fairly between students: each student has at most `running` requests
in flight and `waiting` more queued; past that a request is refused at once (HTTP 429 with
Retry-After). When the upstream's `slots` are all taken, a freed slot goes to the waiting
student served least recently (round-robin over the students who wait), never to whoever
queued most, so one student's loop delays another by at most one request's time.

Plain asyncio, no I/O: the service's handlers hold a turn for the length of a request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator

from ..errors import CodestralError

RETRY_AFTER_S = 2  # what a refused request is told to wait: about one short completion


class Busy(CodestralError):
    """This student already has as many requests running and waiting as allowed (HTTP 429)."""

    def __init__(self, user: str, retry_after: int = RETRY_AFTER_S):
        super().__init__(
            f"{user} has too many Codestral requests at once.",
            429,
            kind="busy",
            fix="Wait for the running ones; the class shares one server.",
        )
        self.retry_after = retry_after


class FairShare:
    """Turns at the upstream, handed out per student in rotation."""

    def __init__(self, slots: int = 8, running: int = 2, waiting: int = 4):
        if min(slots, running) < 1 or waiting < 0:
            raise ValueError("slots and running must be at least 1, waiting at least 0")
        self.slots = slots
        self.per_user_running = running
        self.per_user_waiting = waiting
        self._running: dict[str, int] = defaultdict(int)
        self._total = 0
        self._queues: dict[str, deque[asyncio.Future]] = {}  # students' queued requests
        self._last_turn: dict[str, int] = {}  # when each student was last granted one
        self._turns = 0

    def load(self, user: str) -> tuple[int, int]:
        """(running, waiting) requests of `user`."""
        return self._running.get(user, 0), len(self._queues.get(user, ()))

    @contextlib.asynccontextmanager
    async def turn(self, user: str) -> AsyncIterator[None]:
        """Wait for `user`'s turn (raises `Busy` when over the bound), hold it while inside."""
        await self._acquire(user)
        try:
            yield
        finally:
            self._release(user)

    async def _acquire(self, user: str) -> None:
        queued = len(self._queues.get(user, ()))
        must_wait = (
            queued
            or self._total >= self.slots
            or (self._running.get(user, 0) >= self.per_user_running)
        )
        if must_wait and queued >= self.per_user_waiting:
            raise Busy(user)
        ticket = asyncio.get_running_loop().create_future()
        self._queues.setdefault(user, deque()).append(ticket)
        self._dispatch()
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():  # granted as it was cancelled
                self._release(user)
            else:
                self._forget(user, ticket)
            raise

    def _release(self, user: str) -> None:
        self._running[user] -= 1
        if not self._running[user]:
            del self._running[user]
        self._total -= 1
        self._dispatch()

    def _forget(self, user: str, ticket: asyncio.Future) -> None:
        queue = self._queues.get(user)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._queues[user]
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant free slots to waiting students in turn, skipping those at their own bound."""
        while self._total < self.slots:
            ready = [u for u in self._queues if self._running.get(u, 0) < self.per_user_running]
            if not ready:
                return
            user = min(ready, key=lambda u: self._last_turn.get(u, -1))  # least recently served
            queue = self._queues[user]
            queue.popleft().set_result(None)
            if not queue:
                del self._queues[user]
            self._turns += 1
            self._last_turn[user] = self._turns
            self._running[user] += 1
            self._total += 1
