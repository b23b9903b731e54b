"""The server's life around uvicorn: how it ends, and the connection file while it runs.

uvicorn on its own ends open streams at once on SIGTERM (sse-starlette closes them cleanly, so
a cut answer looks complete). Here a signal, or the idle timeout, first stops taking requests
(new ones get a retryable 503 in Mistral's error shape), lets the running ones finish for a
grace period, then cuts what is left with an in-band error event, and only then lets uvicorn
shut down. The idle decision and the refusal of new requests both run on the event loop, so a
request is either counted before the engine decides to exit or refused after: never cut.
While it runs, the server writes its connection file again if someone deletes or overwrites it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from types import FrameType

import uvicorn

from . import connection
from .state import ServerState

SHUTDOWN_GRACE_S = 5.0  # running requests may finish for this long after a signal
CUT_FLUSH_S = 2.0  # then cut requests have this long to send their error event
KEEP_FILE_EVERY_TICKS = 10  # uvicorn ticks every 0.1 s: check the connection file each second


def shutdown_grace_s() -> float:
    try:
        return float(os.environ.get("CODESTRAL_ENGINE_SHUTDOWN_GRACE_S", SHUTDOWN_GRACE_S))
    except ValueError:
        return SHUTDOWN_GRACE_S


class EngineServer(uvicorn.Server):
    """uvicorn's server, draining before it exits and keeping the connection file."""

    def __init__(
        self,
        config: uvicorn.Config,
        state: ServerState,
        info: connection.ConnectionInfo,
        idle_timeout: float | None = None,
    ):
        super().__init__(config)
        self.state = state
        self.info = info
        self.idle_timeout = idle_timeout
        self.grace_s = shutdown_grace_s()
        self._asked: str | None = None  # a signal asked to stop (set in the signal handler)
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._asked is None:
            # Only note it: the event loop starts the drain at its next tick (a handler can
            # run between any two lines of a request's code).
            self._asked = "stop"
        else:  # a second signal: exit now, as uvicorn does
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.state.closing is None:
            idle = self.state.idle_seconds()
            if self._asked is not None:
                self._close(self._asked)
            elif self.idle_timeout and idle is not None and idle >= self.idle_timeout:
                say(f"Idle for {idle:.0f} s: exiting (it starts again on the next request).")
                self._close("idle")
            elif counter % KEEP_FILE_EVERY_TICKS == 0 and self._keep_file():
                say(
                    f"The connection file {connection.connection_path()} was missing or "
                    f"changed: wrote it again (pid {self.info.pid})."
                )
        return await super().on_tick(counter)

    def _keep_file(self) -> bool:
        try:
            return connection.keep(self.info)
        except OSError:  # the runtime directory went away or is full: try again next time
            return False

    def _close(self, reason: str) -> None:
        """Refuse new requests from now on, take the connection file away (new clients start
        a fresh engine), and drain."""
        self.state.closing = reason
        connection.remove(self.info.pid)
        self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await self._until_no_requests(self.grace_s)
        if self.state.open_requests:
            say(
                f"{self.state.open_requests} request(s) still running after {self.grace_s:.0f} s: "
                "cutting them with an error event to their clients."
            )
            self.state.cut()
            await self._until_no_requests(CUT_FLUSH_S)
        self.should_exit = True

    async def _until_no_requests(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state.open_requests and loop.time() < deadline:
            await asyncio.sleep(0.05)


def say(message: str) -> None:
    print(f"codestral-engine: {message}", file=sys.stderr, flush=True)
