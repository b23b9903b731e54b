"""Connection limits uvicorn's h11 protocol lacks, as a subclass of it (`Config(http=...)`).

uvicorn times out a connection only between requests (`timeout_keep_alive`), never while it
waits for the first request's headers, so connections that send nothing, or a byte at a time,
stay open forever and use up the process's descriptors. Here:
- the same `timeout_keep_alive` also bounds the wait for each request's complete headers
  (uvicorn's own timer, armed when a connection opens and no longer cancelled by every byte);
- past `MAX_CONNECTIONS` open connections, a request is answered 503 with `Retry-After` in
  Mistral's error shape (uvicorn's `limit_concurrency` answers plain text, without it);
- a client that half-closes its socket after a complete request (as `nc -N` does) still gets
  its answer, then the connection closes (uvicorn closes at once, and the request with it);
  one that closed it altogether is found out by writing to it.
A body that stalls is the app's to time out (`http_input.read_body`).
"""

from __future__ import annotations

import asyncio
import json
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .api_schema import error_json

MAX_CONNECTIONS = 256
PROBE_EVERY_S = 1.0  # how often a half-closed connection is checked until its answer
RETRY_AFTER_S = 5  # uvicorn's default keep-alive (and so header) timeout: room by then


def raise_descriptor_limit() -> None:
    """Allow as many open files as the hard limit does: connections over the cap are still
    accepted (and answered 503), so the cap must stay well below the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 4 * MAX_CONNECTIONS if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a connection cap and half-close."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        # uvicorn cancels the timer on any byte; here a request's complete headers do
        # (handle_events cancels it when it parses a request).
        self.conn.receive_data(data)
        self.handle_events()

    def handle_events(self) -> None:
        full = len(self.connections) > MAX_CONNECTIONS
        self.app = _busy if full else self.config.loaded_app
        super().handle_events()

    def eof_received(self) -> bool | None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            cycle.keep_alive = False  # answer, then close
            self._probe(cycle)
            return True  # keep the socket open for writing
        return None

    def _probe(self, cycle) -> None:
        """A client that closed its socket looks like one that half-closed it until the
        server writes. Until the answer starts, write an interim `100 Continue` each second
        (every client must accept 1xx responses before the answer): to a client that has gone
        the second write fails, which ends the request as a disconnect does."""
        if cycle is not self.cycle or cycle.response_started or self.transport.is_closing():
            return
        self.transport.write(
            self.conn.send(
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            )
        )
        self.loop.call_later(PROBE_EVERY_S, self._probe, cycle)

    def _arm_header_timer(self) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )


_BUSY_BODY = json.dumps(
    error_json(
        503,
        f"The engine has {MAX_CONNECTIONS} connections open; retry in {RETRY_AFTER_S} s "
        "(connections that send nothing are closed by then).",
    )
).encode()


async def _busy(scope, receive, send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY_BODY)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_BODY})
