"""Reach Codestral over Mistral's HTTP API, wherever it runs: a sync face for the magic
(`EngineClient`) and an async face for the Jupyter server's routes (`AsyncEngineClient`), both
speaking through `protocol.py`.

`EngineClient.local()` finds this user's engine server through its connection file, or starts
one as a detached process and waits for it while showing the model's load progress.
`EngineClient(url, api_key)` talks to any Mistral-compatible server instead (Mistral's hosted
API, a team server). Either way the caller sees the same methods and errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

from codestral_engine import ModelChoice, choose_model, connection

from . import protocol
from .errors import CodestralError

START_TIMEOUT_S = 900  # loading 44 GB from a slow disk takes minutes


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class EngineClient:
    """Mistral's FIM and chat endpoints, with streaming, for one server (blocking calls)."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    @classmethod
    def local(
        cls,
        model: ModelChoice | str | os.PathLike | None = None,
        *,
        start: bool = True,
        progress: bool = True,
    ) -> EngineClient:
        """The shared engine on this machine, started if it is not running, serving `model`
        (default: what `choose_model` names)."""
        info = connection.read_live()
        if info is None:
            if not start:
                raise CodestralError(
                    "No Codestral engine is running.",
                    fix="Start one with `codestral-engine serve` (or let the client start it).",
                )
            if not isinstance(model, ModelChoice):
                model = choose_model(model)
            info = start_local_server(model)
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
        return self._get("/health")["status"]

    def status(self) -> dict[str, Any]:
        return self._get("/v1/status")

    def wait_until_ready(self, *, progress: bool = True, timeout: float = START_TIMEOUT_S) -> dict:
        """Poll the status route until the model is loaded, drawing a progress bar meanwhile."""
        from tqdm import tqdm  # text bar: works in terminals and notebook outputs alike

        deadline = time.monotonic() + timeout
        bar = None
        try:
            while True:
                status = self.status()
                if status["state"] == "ready":
                    if bar is not None:
                        bar.update(100 - bar.n)
                    return status
                if status["state"] == "error":
                    raise CodestralError(f"The engine could not load the model: {status['error']}")
                if progress and bar is None:
                    bar = tqdm(
                        total=100,
                        desc="Loading Codestral",
                        unit="%",
                        bar_format="{l_bar}{bar}| {n:.0f}%",
                    )
                if bar is not None:
                    bar.set_postfix_str(status["stage"])
                    bar.update(round(status["progress"] * 100) - bar.n)
                if time.monotonic() > deadline:
                    raise CodestralError(
                        f"The engine did not finish loading within {timeout:.0f} s."
                    )
                time.sleep(0.25)
        finally:
            if bar is not None:
                bar.close()

    def fim(self, prompt: str, suffix: str = "", *, stream: bool = False, **params: Any):
        """A FIM completion: the response JSON, or (stream=True) an iterator of chunk JSON."""
        model = params.pop("model", protocol.DEFAULT_MODEL)
        body = protocol.fim_body(prompt, suffix, model, params)
        return self._complete(protocol.FIM_PATH, body, stream)

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **params: Any):
        """A chat completion: the response JSON, or (stream=True) an iterator of chunk JSON."""
        model = params.pop("model", protocol.DEFAULT_MODEL)
        return self._complete(
            protocol.CHAT_PATH, protocol.chat_body(messages, model, params), stream
        )

    def _complete(self, path: str, body: dict[str, Any], stream: bool):
        if not stream:
            return self._checked(lambda: self._http.post(path, json=body))
        return self._stream(path, {**body, "stream": True})

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # Closing this iterator closes the connection, which cancels the generation.
        try:
            with connect_sse(self._http, "POST", path, json=body) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    raise protocol.http_error(source.response)
                for event in source.iter_sse():
                    if (chunk := protocol.stream_chunk(event.data)) is None:
                        return
                    yield chunk
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc

    def _get(self, path: str) -> dict[str, Any]:
        return self._checked(lambda: self._http.get(path))

    def _checked(self, send) -> dict[str, Any]:
        try:
            response = send()
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        if response.status_code != 200:
            raise protocol.http_error(response)
        return response.json()


class AsyncEngineClient:
    """The same server from an event loop (the Jupyter server's routes): never blocks it."""

    def __init__(self, url: str, api_key: str | None = None):
        self.url = url.rstrip("/")
        timeout = httpx.Timeout(10.0, read=None)  # a stream may wait out a long prefill
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(api_key), timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str) -> dict[str, Any]:
        try:
            response = await self._http.get(path)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        if response.status_code != 200:
            raise protocol.http_error(response)
        return response.json()

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks of a streamed completion; leaving the iteration cancels the generation."""
        try:
            async with aconnect_sse(
                self._http, "POST", path, json={**body, "stream": True}
            ) as source:
                if source.response.status_code != 200:
                    await source.response.aread()
                    raise protocol.http_error(source.response)
                async for event in source.aiter_sse():
                    if (chunk := protocol.stream_chunk(event.data)) is None:
                        return
                    yield chunk
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc


def stop_local_server(timeout: float = 30.0) -> connection.ConnectionInfo | None:
    """Stop this user's engine server and wait until it is gone; None if none was running."""
    running = connection.read_live()
    if running is None:
        return None
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while connection.read_live() is not None:
        if time.monotonic() > deadline:
            raise CodestralError(
                f"The engine (pid {running.pid}) did not stop within {timeout:.0f} s."
            )
        time.sleep(0.1)
    return running


def start_local_server(model: ModelChoice) -> connection.ConnectionInfo:
    """Start `codestral-engine serve` detached from this process; wait for its connection file."""
    command = [sys.executable, "-m", "codestral_engine", "serve", "--model", model.argument()]
    log_path = connection.runtime_dir() / "codestral-engine.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    # Reap the server when it ends, so a long-lived kernel collects no zombie processes.
    threading.Thread(target=process.wait, name="codestral-engine-reaper", daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (info := connection.read_live()) is not None:
            return info
        if process.poll() is not None:
            raise CodestralError(f"The engine server exited at start: {_last_line(log_path)}")
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    raise CodestralError(f"The engine server did not start within 60 s; see {log_path}.")


def _last_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else f"no output (see {path})"
