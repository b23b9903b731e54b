"""The Jupyter server's async link to Codestral: this machine's shared engine or a remote API.

`CodestralCompletion` holds the server-side settings (`c.CodestralCompletion.<name>` in
jupyter_server_config.py). `EngineLink` streams FIM completions without blocking the server's
event loop, starts the shared engine in the background when it is not running, and turns every
failure into a `LabError` whose kind the browser shows once, with the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from traitlets import Bool, Enum, Float, Integer, Unicode
from traitlets.config import Configurable

from codestral_engine import connection

from .client import CodestralError, _start_server
from .notebook_context import DEFAULT_BUDGET, DEFAULT_SUFFIX_SHARE
from .targets import resolve_model


class CodestralCompletion(Configurable):
    """Ghost-text completions in JupyterLab, for every user of this Jupyter server."""

    enabled = Bool(
        True, help="Offer completions at all. False turns them off for everyone (an exam)."
    ).tag(config=True)
    engine = Enum(
        ["shared", "remote"],
        default_value="shared",
        help="'shared': this machine's engine server, started on first use. 'remote': a "
        "Mistral-compatible API at `url` (Mistral's hosted API, a team server).",
    ).tag(config=True)
    model = Unicode(
        "", help="Model directory for the shared engine (default: $CODESTRAL_MODEL; 'tiny')."
    ).tag(config=True)
    url = Unicode("https://codestral.mistral.ai", help="Remote API URL (engine='remote').").tag(
        config=True
    )
    api_key = Unicode("", help="Remote API key (default: $CODESTRAL_API_KEY).").tag(config=True)
    remote_model = Unicode("codestral-latest", help="Model name on the remote API.").tag(
        config=True
    )
    context_tokens = Integer(
        DEFAULT_BUDGET, help="Most prompt tokens of notebook context per completion."
    ).tag(config=True)
    suffix_share = Float(
        DEFAULT_SUFFIX_SHARE, help="Share of the context budget for code after the cursor."
    ).tag(config=True)
    max_tokens_limit = Integer(256, help="Most tokens a browser may ask for.").tag(config=True)


class LabError(CodestralError):
    """A failure the browser shows once: `kind` groups repeats, `fix` says what to do."""

    def __init__(self, kind: str, message: str, fix: str = "", status: int = 500):
        super().__init__(message, status)
        self.kind = kind
        self.fix = fix

    def as_json(self) -> dict[str, Any]:
        return {"error": {"kind": self.kind, "message": str(self), "fix": self.fix}}


class EngineLink:
    def __init__(self, settings: CodestralCompletion):
        self.settings = settings
        self._http: httpx.AsyncClient | None = None
        self._url: str | None = None
        self._key: tuple | None = None
        self._starting: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._start_error: str | None = None

    # Where requests go
    def _target(self) -> tuple[str, dict[str, str]]:
        if self.settings.engine == "remote":
            key = self.settings.api_key or os.environ.get("CODESTRAL_API_KEY", "")
            return self.settings.url.rstrip("/"), {"Authorization": f"Bearer {key}"}
        info = connection.read_live()
        if info is None:
            self.start()
            raise LabError(
                "engine_starting",
                "The Codestral engine is starting.",
                "Wait a moment; the status bar shows its progress.",
                status=503,
            )
        return info.url, {"Authorization": f"Bearer {info.token}"}

    def _client(self) -> httpx.AsyncClient:
        url, headers = self._target()
        if self._http is None or self._key != (url, headers["Authorization"]):
            if self._http is not None:  # the engine restarted elsewhere: drop the old client
                task = asyncio.ensure_future(self._http.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            timeout = httpx.Timeout(10.0, read=None)  # a stream may wait out a long prefill
            self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout)
            self._url, self._key = url, (url, headers["Authorization"])
        return self._http

    def start(self) -> None:
        """Start the shared engine in the background (once); status reports its progress."""
        if self.settings.engine != "shared" or (self._starting and not self._starting.done()):
            return
        self._start_error = None
        model = resolve_model(self.settings.model)
        self._starting = asyncio.ensure_future(asyncio.to_thread(_start_server, model))
        self._starting.add_done_callback(self._started)

    def _started(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._start_error = str(task.exception())

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def status(self) -> dict[str, Any]:
        """Engine state for the status bar: stopped | starting | loading | ready | error."""
        base = {"engine": self.settings.engine, "enabled": self.settings.enabled}
        if self.settings.engine == "remote":
            return base | {"state": "ready", "model": self.settings.remote_model,
                           "url": self.settings.url}  # fmt: skip
        if connection.read_live() is None:
            if self._start_error:
                return base | {"state": "error", "error": self._start_error}
            starting = self._starting is not None and not self._starting.done()
            return base | {"state": "starting" if starting else "stopped", "progress": 0.0}
        try:
            response = await self._client().get("/v1/status")
        except httpx.TransportError as exc:
            return base | {"state": "error", "error": f"The engine does not answer ({exc})."}
        return base | response.json()

    async def fim(
        self, prompt: str, suffix: str, params: dict[str, Any], session: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Chunks of a streamed FIM completion; leaving the iteration cancels the generation."""
        body: dict[str, Any] = {"prompt": prompt, "suffix": suffix, "stream": True, **params}
        if self.settings.engine == "remote":
            body["model"] = self.settings.remote_model
        else:  # our own engine: supersede this browser's previous request, go first
            body |= {"model": "codestral-latest", "priority": "interactive"}
            if session:
                body["session_key"] = session
        client = self._client()
        try:
            async with aconnect_sse(client, "POST", "/v1/fim/completions", json=body) as source:
                if source.response.status_code != 200:
                    await source.response.aread()
                    raise _http_error(source.response)
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        return
                    chunk = json.loads(event.data)
                    if chunk.get("object") == "error":
                        raise LabError("engine_error", chunk.get("message", "engine error"))
                    yield chunk
        except httpx.TransportError as exc:
            raise LabError(
                "unreachable",
                f"Cannot reach Codestral at {self._url} ({exc}).",
                "Check that the engine runs (`%codestral status` in a notebook) or the "
                "CodestralCompletion.url setting.",
                status=502,
            ) from exc


def _http_error(response: httpx.Response) -> LabError:
    try:
        message = response.json().get("message") or response.text
    except ValueError:
        message = response.text or response.reason_phrase
    status = response.status_code
    if status == 401:
        return LabError(
            "auth",
            f"Codestral refused the API key: {message}",
            "Set CodestralCompletion.api_key (or $CODESTRAL_API_KEY) in the Jupyter server's "
            "configuration, then restart it.",
            status=502,
        )
    if status == 503:
        return LabError("engine_starting", str(message), "Wait until the model has loaded.", 503)
    if status == 429:
        return LabError("busy", str(message), "Completions resume when the queue drains.", 429)
    if status == 413:
        return LabError(
            "context",
            str(message),
            "Lower 'Context budget' in Settings > Codestral.",
            status=413,
        )
    return LabError("engine_error", f"Codestral answered {status}: {message}", status=502)
