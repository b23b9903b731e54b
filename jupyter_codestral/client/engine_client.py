"""Reach Codestral over HTTP, wherever it runs: a sync face for the magic
(`EngineClient`) and an async face for the Jupyter server's routes (`AsyncEngineClient`), both
speaking through `protocol.py`.

`EngineClient.local()` finds this user's engine server through its connection file, or starts
one as a detached process and waits for it while showing the model's load progress.
`EngineClient(url, api_key, protocol_name=...)` talks to any server instead: Mistral's hosted
API or a team's `serve` ("mistral"), a team's vLLM ("vllm", see `protocol.py`). Either way the
caller sees the same methods and errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

from codestral_engine import ModelChoice, choose_model, connection

from ..errors import CodestralError
from . import protocol, shapes
from .local_engine import refused_token, serves_model, start_local_server, stop_local_server
from .settings import DEFAULT_IDLE_TIMEOUT_S
from .status import Status, read_status

START_TIMEOUT_S = 900  # loading 44 GB from a slow disk takes minutes
STATUS_TTL_S = 10.0  # a remote server's status, asked again at most this often
# Status and model lists answer at once from a live server, even mid-generation: waiting longer
# means it is frozen or swamped, which the status bar says ("not responding").
METADATA_READ_TIMEOUT_S = 5.0


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _Speaking:
    """What both faces share: the protocol, the server's url and what was checked of it."""

    def __init__(self, url: str, protocol_name: str):
        self.url = url.rstrip("/")
        self.wire = protocol.wire(protocol_name)
        self._checked: set[str] = set()  # models found served (and Codestral-tokenized)

    def _needs_check(self, model: str) -> bool:
        # Our own protocol's servers answer an unknown model with the list; token-id prompts
        # are only meaningful for Codestral's tokenizer, so check that server once.
        return self.wire.name == "vllm" and model not in self._checked

    def _failure(self, response: httpx.Response) -> CodestralError:
        return protocol.http_error(response, self.wire.name)


class EngineClient(_Speaking):
    """FIM and chat, with streaming, for one server (blocking calls), in its protocol."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        protocol_name: str = "mistral",
        timeout: float = 600.0,
    ):
        super().__init__(url, protocol_name)
        self.api_key = api_key
        self._http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    @classmethod
    def local(
        cls,
        model: ModelChoice | str | os.PathLike | None = None,
        *,
        start: bool = True,
        progress: bool = True,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> EngineClient:
        """The shared engine on this machine, started if it is not running, serving `model`
        (default: what `choose_model` names); one it starts exits after `idle_timeout` seconds
        without requests (0: never)."""
        info = connection.read_live()
        if not isinstance(model, ModelChoice):
            model = choose_model(model)
        if info is not None:
            with cls(info.url, info.token) as probe:
                try:
                    failed = probe.status().state == "error"
                except CodestralError as exc:
                    if exc.kind != "auth":
                        raise
                    raise refused_token(exc, info.url, info.pid) from exc
            if failed:  # its model failed to load: replace it with a fresh one
                stop_local_server()
                info = None
        if info is None:
            if not start:
                raise CodestralError(
                    "No Codestral engine is running.",
                    fix="Start one with `codestral-engine serve` (or let the client start it).",
                )
            info = start_local_server(model, idle_timeout)
        elif model.source in ("setting", "environment") and not serves_model(info, model):
            raise CodestralError(
                f"The running engine (pid {info.pid}) serves {info.model}, not {model.model}.",
                kind="other_model",
                fix="The engine serves one model at a time: stop it (`%codestral stop`, or stop "
                "its `codestral-engine serve`) and run again to load the one you asked for.",
            )
        client = cls(info.url, info.token)
        client.wait_until_ready(progress=progress)
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def health(self) -> str:
        """loading | ready | error: /health answers 503 until ready, with the state."""
        response = self._send("GET", "/health", None)
        if response.status_code not in (200, 503):
            raise self._failure(response)
        return response.json()["status"]

    def status(self) -> Status:
        """Our engine's own status route (state, progress, model, memory, timings)."""
        return read_status(self._get("/v1/status"), self.url)

    def remote_status(self, model: str) -> Status:
        """Any server in this client's protocol: reachable, serving `model`, what it serves."""
        return read_status(self._run(protocol.remote_status(self.wire, self.url, model)), self.url)

    def wait_until_ready(
        self, *, progress: bool = True, timeout: float = START_TIMEOUT_S
    ) -> Status:
        """Poll the status route until the model is loaded, drawing a progress bar meanwhile."""
        from tqdm import tqdm  # text bar: works in terminals and notebook outputs alike

        deadline = time.monotonic() + timeout
        bar = None
        try:
            while True:
                status = self.status()
                if status.state == "ready":
                    if bar is not None:
                        bar.update(100 - bar.n)
                    return status
                if status.state == "error":
                    raise CodestralError(f"The engine could not load the model: {status.error}")
                if progress and bar is None:
                    bar = tqdm(
                        total=100,
                        desc="Loading Codestral",
                        unit="%",
                        bar_format="{l_bar}{bar}| {n:.0f}%",
                    )
                if bar is not None:
                    bar.set_postfix_str(status.stage or "")
                    bar.update(round((status.progress or 0.0) * 100) - bar.n)
                if time.monotonic() > deadline:
                    raise CodestralError(
                        f"The engine did not finish loading within {timeout:.0f} s."
                    )
                time.sleep(0.25)
        finally:
            if bar is not None:
                bar.close()

    def fim(self, prompt: str, suffix: str = "", *, stream: bool = False, **params: Any):
        """A FIM completion: the response JSON, or (stream=True) its `Piece`s."""
        model = params.pop("model", protocol.DEFAULT_MODEL)
        self._check(model)
        request = self.wire.fim(prompt, suffix, model, shapes.sampling(params))
        return self._complete(*request, stream, model)

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **params: Any):
        """A chat completion: the response JSON, or (stream=True) its `Piece`s."""
        model = params.pop("model", protocol.DEFAULT_MODEL)
        request = self.wire.chat(messages, model, shapes.sampling(params))
        return self._complete(*request, stream, model)

    def _check(self, model: str) -> None:
        if self._needs_check(model):
            self._run(protocol.check_served(self.wire, self.url, model))
            self._checked.add(model)

    def _complete(self, path: str, body: dict[str, Any], stream: bool, model: str):
        if stream:
            return self._stream(path, self.wire.streaming(body), model)
        response = self._send("POST", path, body)
        if response.status_code != 200:
            raise self._explained(response, model)
        return response.json()

    def _stream(self, path: str, body: dict[str, Any], model: str) -> Iterator[shapes.Piece]:
        # Closing this iterator closes the connection, which cancels the generation.
        try:
            with connect_sse(self._http, "POST", path, json=body) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    raise self._explained(source.response, model)
                for event in source.iter_sse():
                    if (chunk := protocol.stream_chunk(event.data)) is None:
                        return
                    yield shapes.piece(chunk)
            raise protocol.cut_short(self.url)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc

    def _explained(self, response: httpx.Response, model: str) -> CodestralError:
        error = self._failure(response)
        if error.kind != "not_found":
            return error
        return self._run(protocol.explain_not_found(self.wire, model, error))

    def _get(self, path: str) -> dict[str, Any]:
        response = self._send("GET", path, None)
        if response.status_code != 200:
            raise self._failure(response)
        return response.json()

    def _send(self, method: str, path: str, body: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc

    def _run(self, steps: Generator) -> Any:
        """Run one of `protocol`'s request steps over this client's connection."""
        try:
            request = next(steps)
            while True:
                try:
                    response = self._send(*request)
                except CodestralError as exc:
                    request = steps.throw(exc)
                else:
                    request = steps.send(response)
        except StopIteration as done:
            return done.value


class AsyncEngineClient(_Speaking):
    """The same server from an event loop (the Jupyter server's routes): never blocks it."""

    def __init__(self, url: str, api_key: str | None = None, *, protocol_name: str = "mistral"):
        super().__init__(url, protocol_name)
        self._status_cache: dict[str, tuple[float, Status]] = {}
        timeout = httpx.Timeout(10.0, read=None)  # a stream may wait out a long prefill
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(api_key), timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str) -> dict[str, Any]:
        response = await self._send("GET", path, None)
        if response.status_code != 200:
            raise self._failure(response)
        return response.json()

    async def remote_status(self, model: str) -> Status:
        """As the sync face's, kept for STATUS_TTL_S: every open tab polls it."""
        now = time.monotonic()
        cached = self._status_cache.get(model)
        if cached is None or now - cached[0] > STATUS_TTL_S:
            raw = await self._run(protocol.remote_status(self.wire, self.url, model))
            status = read_status(raw, self.url)
            self._status_cache[model] = cached = (now, status)
        return cached[1]

    def fim(
        self, prompt: str, suffix: str, model: str, params: shapes.Sampling
    ) -> AsyncIterator[shapes.Piece]:
        """Pieces of a streamed FIM completion; leaving the iteration cancels the generation."""
        path, body = self.wire.fim(prompt, suffix, model, params)
        return self._stream(path, self.wire.streaming(body), model)

    def chat(
        self, messages: list[dict[str, Any]], model: str, params: shapes.Sampling
    ) -> AsyncIterator[shapes.Piece]:
        """Pieces of a streamed chat completion; leaving the iteration cancels the generation."""
        path, body = self.wire.chat(messages, model, params)
        return self._stream(path, self.wire.streaming(body), model)

    async def _stream(
        self, path: str, body: dict[str, Any], model: str
    ) -> AsyncIterator[shapes.Piece]:
        if self._needs_check(model):
            await self._run(protocol.check_served(self.wire, self.url, model))
            self._checked.add(model)
        try:
            async with aconnect_sse(self._http, "POST", path, json=body) as source:
                if source.response.status_code != 200:
                    await source.response.aread()
                    error = self._failure(source.response)
                    if error.kind == "not_found":
                        error = await self._run(protocol.explain_not_found(self.wire, model, error))
                    raise error
                async for event in source.aiter_sse():
                    if (chunk := protocol.stream_chunk(event.data)) is None:
                        return
                    yield shapes.piece(chunk)
            raise protocol.cut_short(self.url)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc

    async def _send(self, method: str, path: str, body: Any) -> httpx.Response:
        timeout = httpx.Timeout(10.0, read=METADATA_READ_TIMEOUT_S)
        try:
            return await self._http.request(method, path, json=body, timeout=timeout)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc

    async def _run(self, steps: Generator) -> Any:
        try:
            request = next(steps)
            while True:
                try:
                    response = await self._send(*request)
                except CodestralError as exc:
                    request = steps.throw(exc)
                else:
                    request = steps.send(response)
        except StopIteration as done:
            return done.value
