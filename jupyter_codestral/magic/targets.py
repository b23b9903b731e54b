"""Where the magic's requests go: the shared engine, a remote Mistral-compatible URL, or an
engine loaded inside this process. All three stream the same way: an iterator of text deltas
that records the finish reason and usage, and that cancels its request when closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from codestral_engine import LastRequest, ModelChoice, RequestUsage

from ..client import protocol, shapes
from ..client.engine_client import EngineClient
from ..client.local_engine import refused_token
from ..client.status import Status
from ..errors import CodestralError


class Stream:
    """Text deltas of one completion; `close()` (or leaving a `with`) cancels the request."""

    def __init__(self, deltas: Iterator[str]):
        self._deltas = deltas
        self.finish_reason: str | None = None
        self.usage: shapes.Usage | None = None

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    def close(self) -> None:
        self._deltas.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Target(Protocol):
    description: str

    def fim(self, prompt: str, suffix: str, params: shapes.Sampling) -> Stream: ...

    def chat(self, messages: list[dict[str, Any]], params: shapes.Sampling) -> Stream: ...

    def status(self) -> Status: ...

    def waiting_note(self) -> str: ...

    def close(self) -> None: ...


class HTTPTarget:
    """A server over HTTP: this user's shared engine (remote=False, our status route), or a
    remote one in the client's protocol (its timings measured here)."""

    def __init__(
        self,
        client: EngineClient,
        description: str,
        model: str = protocol.DEFAULT_MODEL,
        *,
        remote: bool = False,
    ):
        self.client = client
        self.description = description
        self.model = model
        self.remote = remote
        self.last_request: LastRequest | None = None  # timed here: a remote says nothing

    def fim(self, prompt: str, suffix: str, params: shapes.Sampling) -> Stream:
        chunks = self.client.fim(prompt, suffix, stream=True, model=self.model, **params.mistral())
        return self._stream(chunks)

    def chat(self, messages: list[dict[str, Any]], params: shapes.Sampling) -> Stream:
        return self._stream(
            self.client.chat(messages, stream=True, model=self.model, **params.mistral())
        )

    def status(self) -> Status:
        if not self.remote:
            return self.client.status()
        status = self.client.remote_status(self.model)
        return status.model_copy(update={"last_request": self.last_request})

    def waiting_note(self) -> str:
        """What a new request waits behind on our engine ("" remotely or when nothing)."""
        if self.remote:
            return ""
        try:
            status = self.client.status()
        except CodestralError:
            return ""
        return requests_ahead((status.queue_length or 0) + (status.running_requests or 0))

    def close(self) -> None:
        self.client.close()

    def _stream(self, chunks: Iterator[shapes.Piece]) -> Stream:
        def deltas() -> Iterator[str]:
            clock = _Clock()
            try:
                for piece in chunks:
                    if piece.text:
                        clock.text()
                        yield piece.text
                    if piece.finish_reason:
                        stream.finish_reason = piece.finish_reason
                    if piece.usage:  # with the finish reason, or in a last chunk (vLLM)
                        stream.usage = piece.usage
            except CodestralError as exc:
                if self.remote or exc.kind != "auth":
                    raise
                raise refused_token(exc, self.client.url) from exc
            finally:
                chunks.close()  # closes the connection: the server cancels the generation
                self.last_request = clock.last_request(stream)

        stream = Stream(deltas())
        return stream


class _Clock:
    """Client-side timings of one streamed request (what a remote server does not report)."""

    def __init__(self):
        self.sent = time.monotonic()
        self.first: float | None = None

    def text(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def last_request(self, stream: Stream) -> LastRequest | None:
        """The stream's usage and finish, with the times measured here."""
        if self.first is None:
            return None
        usage = stream.usage or shapes.Usage()
        tokens = usage.completion_tokens
        decode_s = time.monotonic() - self.first
        return LastRequest(
            **usage.model_dump(include=set(RequestUsage.model_fields)),
            finish_reason=stream.finish_reason,
        ).model_copy(update={
            "time_to_first_token_s": self.first - self.sent,
            "decode_tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s else None,
        })  # fmt: skip


class InProcessTarget:
    """The engine inside this kernel: for scripts and terminal IPython without a server."""

    def __init__(self, model: ModelChoice):
        import codestral_engine

        path = model.path()
        self.engine = codestral_engine.load(path)
        self.description = f"in-process engine, {path}"

    def fim(self, prompt: str, suffix: str, params: shapes.Sampling) -> Stream:
        return self._stream(
            self._submit(lambda: self.engine.fim(prompt, suffix, **params.mistral()))
        )

    def chat(self, messages: list[dict[str, Any]], params: shapes.Sampling) -> Stream:
        return self._stream(self._submit(lambda: self.engine.chat(messages, **params.mistral())))

    def status(self) -> Status:
        from codestral_engine import EngineStatus

        return Status.model_validate(EngineStatus.of(self.engine).model_dump())

    def waiting_note(self) -> str:
        return requests_ahead(self.engine.queue_length + self.engine.running_requests)

    def close(self) -> None:
        self.engine.close()

    @staticmethod
    def _submit(make):
        from codestral_engine import EngineError

        try:
            return make()
        except EngineError as exc:  # the request's fault (parameters, context size, queue)
            raise CodestralError(str(exc), 400, kind="bad_request") from exc

    @staticmethod
    def _stream(request) -> Stream:
        from codestral_engine import EngineError, Finished

        def deltas() -> Iterator[str]:
            try:
                for event in request:
                    if isinstance(event, Finished):
                        stream.finish_reason = event.finish_reason
                        stream.usage = shapes.Usage.model_validate(event.usage.as_dict())
                    elif event.text:
                        yield event.text
            except EngineError as exc:
                raise CodestralError(str(exc), 500, kind="engine_error") from exc
            finally:
                request.cancel()

        stream = Stream(deltas())
        return stream


def requests_ahead(count: int) -> str:
    return f"{count} request{'s' if count != 1 else ''} ahead" if count else ""
