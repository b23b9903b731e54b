"""The Jupyter server's link to Codestral: this machine's shared engine or a remote API.

`CodestralCompletion` holds the server-side settings (`c.CodestralCompletion.<name>` in
jupyter_server_config.py), on the base the magic shares. `EngineLink` streams FIM completions
through the async client without blocking the server's event loop, starts the shared engine in
the background when it is not running, and lets every failure reach the browser as a
`CodestralError` whose kind it shows once, with the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from traitlets import Bool, Float, Integer, List, Unicode

from codestral_engine import choose_model, connection

from ..client import protocol, shapes
from ..client.engine_client import AsyncEngineClient
from ..client.local_engine import start_local_server
from ..client.settings import CodestralSettings
from ..client.status import Status, read_status
from ..context.notebook import DEFAULT_BUDGET, DEFAULT_SUFFIX_SHARE
from ..errors import CodestralError

log = logging.getLogger(__name__)


class CodestralCompletion(CodestralSettings):
    """Ghost-text completions in JupyterLab, for every user of this Jupyter server."""

    enabled = Bool(
        True, help="Offer completions at all. False turns them off for everyone (an exam)."
    ).tag(config=True)
    context_tokens = Integer(
        DEFAULT_BUDGET, help="Most prompt tokens of notebook context per completion."
    ).tag(config=True)
    suffix_share = Float(
        DEFAULT_SUFFIX_SHARE, help="Share of the context budget for code after the cursor."
    ).tag(config=True)
    max_tokens_limit = Integer(256, help="Most tokens a browser may ask for.").tag(config=True)
    project_context = Bool(
        True,
        help="Put the signatures of the project's own functions and classes that a notebook "
        "uses at the top of the prompt (read with `ast` from files under the server's root; "
        "with a remote engine they go to that server). False turns it off for everyone.",
    ).tag(config=True)
    project_dirs = List(
        Unicode(),
        help="Directories besides the server's root whose Python files the project context "
        "may read (a shared library of the course, a package checked out elsewhere).",
    ).tag(config=True)


def engine_starting() -> CodestralError:
    return CodestralError(
        "The Codestral engine is starting.",
        503,
        kind="engine_starting",
        fix="Wait a moment; the status bar shows its progress.",
    )


class EngineLink:
    def __init__(self, settings: CodestralCompletion):
        self.settings = settings
        self._client: AsyncEngineClient | None = None
        self._where: tuple[str, str, str] | None = None  # the client's url, key and protocol
        self._starting: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._start_error: str | None = None

    def client(self) -> AsyncEngineClient:
        """The client for where requests go now (settings are read on every request)."""
        wanted = self.settings.where()
        if wanted.remote:
            where = (wanted.url, wanted.api_key, wanted.protocol)
        else:
            info = connection.read_live()
            if info is None:
                self.start()
                raise engine_starting()
            where = (info.url, info.token, "mistral")
        if self._client is None or self._where != where:
            if self._client is not None:  # moved (engine restarted, setting changed): drop it
                task = asyncio.ensure_future(self._client.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            url, key, protocol_name = where
            self._client = AsyncEngineClient(url, key, protocol_name=protocol_name)
            self._where = where
        return self._client

    def start(self) -> None:
        """Start the shared engine in the background (once); status reports its progress."""
        if self.settings.engine != "shared" or (self._starting and not self._starting.done()):
            return
        self._start_error = None
        self._starting = asyncio.ensure_future(
            asyncio.to_thread(_start_shared_engine, self.settings.model, self.settings.idle_timeout)
        )  # choosing reads the Hugging Face cache: off the event loop too
        self._starting.add_done_callback(self._started)

    def _started(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._start_error = str(task.exception())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def status(self) -> Status:
        """Engine state for the status bar: stopped | starting | loading | ready | error."""
        try:
            if self.settings.engine == "remote":
                return await self.client().remote_status(self.settings.remote_model)
        except CodestralError as exc:  # a setting (or its environment variable) is wrong
            return Status(state="error", error=str(exc), kind=exc.kind, fix=exc.fix)
        if (running := connection.read_live()) is None:
            if self._start_error:
                return Status(state="error", error=self._start_error)
            starting = self._starting is not None and not self._starting.done()
            return Status(state="starting" if starting else "stopped", progress=0.0)
        try:
            client = self.client()
            return read_status(await client.get("/v1/status"), client.url)
        except CodestralError as exc:
            if exc.kind == "not_responding":
                error = f"The engine (pid {running.pid}) is not responding. {exc.fix}"
                return Status(state="not_responding", error=error, pid=running.pid)
            return Status(state="error", error=str(exc), kind=exc.kind)

    def fim(
        self, prompt: str, suffix: str, params: shapes.Sampling, session: str | None
    ) -> AsyncIterator[shapes.Piece]:
        """Pieces of a streamed FIM completion; leaving the iteration cancels the generation."""
        return self._stream(
            lambda client, model, p: client.fim(prompt, suffix, model, p), params, session
        )

    def chat(
        self, messages: list[dict[str, Any]], params: shapes.Sampling
    ) -> AsyncIterator[shapes.Piece]:
        """Pieces of a streamed chat completion (a fix at a traceback), cancelled likewise. It
        runs at batch priority on our engine: ghost text typed meanwhile goes first."""
        return self._stream(
            lambda client, model, p: client.chat(messages, model, p), params, None, priority="batch"
        )

    async def _stream(
        self, call, params: shapes.Sampling, session: str | None, priority: str = "interactive"
    ) -> AsyncIterator[shapes.Piece]:
        if self.settings.engine == "remote":
            model = self.settings.remote_model
        else:  # our own engine: supersede this browser's previous request, go first
            model = protocol.DEFAULT_MODEL
            params = params.replace(priority=priority, session_key=session)
        retry = self.settings.engine == "shared"
        try:
            while True:
                answered = False
                try:
                    # Closing this generator (a time budget, a newer keystroke) closes the
                    # stream now, which cancels the engine's request, instead of when it is
                    # garbage-collected.
                    stream = call(self.client(), model, params)
                    async with contextlib.aclosing(stream) as pieces:
                        async for piece in pieces:
                            answered = True
                            yield piece
                    return
                except CodestralError as exc:
                    if not (retry and not answered and self._went_away(exc)):
                        raise
                retry = False  # once: on a fresh engine, started now
                self.start()
                with contextlib.suppress(Exception):  # a failed start shows in the status
                    await asyncio.shield(self._starting)
        except CodestralError as exc:
            fix = _LAB_FIXES.get((exc.kind, self.settings.engine)) or _LAB_FIXES.get(exc.kind)
            if not fix:
                raise
            raise CodestralError(exc.message, exc.status, kind=exc.kind, fix=fix) from exc

    def _went_away(self, exc: CodestralError) -> bool:
        """Whether the shared engine exited under a request it had not answered: it refused
        it while exiting after its idle timeout, or it is gone."""
        if exc.kind == "engine_idle_exit":
            return True
        info = connection.read_live()
        moved = info is None or self._where is None or (info.url, info.token) != self._where[:2]
        return exc.kind == "unreachable" and moved


def _start_shared_engine(model: str, idle_timeout: float) -> connection.ConnectionInfo:
    choice = choose_model(model or None)
    if choice.note:
        log.warning("jupyter_codestral: %s", choice.note)
    return start_local_server(choice, idle_timeout)


# The fix as a JupyterLab user finds it (by error kind, or kind and engine setting).
_LAB_FIXES: dict[Any, str] = {
    ("auth", "remote"): "Set CodestralCompletion.api_key (or $CODESTRAL_API_KEY) in the Jupyter "
    "server's configuration.",
    ("auth", "shared"): "The engine's connection file changed under it: restart the engine "
    "(`%codestral stop` in a notebook; the next suggestion starts it).",
    "context": "Lower 'Context budget' in Settings > Codestral.",
    "unreachable": "Check that the engine runs (`%codestral status` in a notebook) or the "
    "CodestralCompletion.url setting.",
    ("unreachable", "remote"): "Check CodestralCompletion.url (the team server's address) and "
    "that the server runs.",
    ("unknown_model", "remote"): "Set CodestralCompletion.remote_model to one of those names.",
}
