"""Jupyter server routes for ghost text, under `<base_url>/codestral/`, all authenticated.

POST complete  cells + cursor in, newline-delimited JSON out: a `context` line (what the prompt
               holds), `delta` lines (text), then `done` (finish reason, usage) or `error`.
               Closing the connection cancels the engine's request within a decode step.
GET  status    engine state and progress, the last request's timings, the server's settings.
POST start     start the shared engine now (it also starts on the first completion).
GET  probe     the code the extension runs in a kernel after an execution to learn its live
               objects (kernel_facts.py), whose lines come back as `facts` in complete.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from pydantic import BaseModel, ValidationError
from tornado import web
from tornado.iostream import StreamClosedError

from . import protocol
from .errors import CodestralError
from .kernel_facts import probe_request
from .lab_engine import CodestralCompletion, EngineLink
from .lab_wire import CompleteRequest, ContextEvent, DeltaEvent, DoneEvent, ErrorEvent, ErrorInfo
from .notebook_context import Cell, ContextBuilder, TokenCounter

MAX_BODY_BYTES = 8 << 20
LINE_BREAK = re.compile(r"\r\n?|\n")  # what editors (CodeMirror) show as a new line
WARM_TOKENS = 1  # a warm-up request prefills the prompt into the cache and stops at once


class _Base(APIHandler):
    @property
    def service(self) -> LabService:
        return self.settings["codestral"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, CodestralError):
            self.finish(json.dumps(exc.as_json()))
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            kind = {400: "bad_request", 403: "forbidden", 413: "too_large"}.get(status_code)
            error = {"kind": kind or "error", "message": exc.log_message, "fix": ""}
            self.finish(json.dumps({"error": error}))
        else:
            super().write_error(status_code, **kwargs)

    def fail(self, error: CodestralError) -> None:
        self.set_status(error.status or 500)
        self.finish(json.dumps(error.as_json()))


class StatusHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        status = await self.service.link.status()
        settings = self.service.settings
        # What a terminal runs to download the weights (this server's own Python).
        status["pull_command"] = f"{shlex.quote(sys.executable)} -m codestral_engine pull"
        status["settings"] = {
            "enabled": settings.enabled,
            "context_tokens": settings.context_tokens,
            "suffix_share": settings.suffix_share,
            "max_tokens_limit": settings.max_tokens_limit,
        }
        self.finish(json.dumps(status))


class ProbeHandler(_Base):
    """What the extension runs in a kernel after an execution to learn its live objects."""

    @web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps(probe_request()))


class StartHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        self.service.link.start()
        self.finish(json.dumps(await self.service.link.status()))


class CompleteHandler(_Base):
    _stream_task: asyncio.Task | None = None

    @web.authenticated
    async def post(self) -> None:
        service = self.service
        if not service.settings.enabled:
            return self.fail(
                CodestralError(
                    "Completions are turned off on this Jupyter server.",
                    403,
                    kind="disabled",
                    fix="Ask the server's administrator (CodestralCompletion.enabled).",
                )
            )
        body = self._body()
        if body.max_tokens > service.settings.max_tokens_limit:
            raise web.HTTPError(
                400, f"max_tokens is above this server's limit of "
                f"{service.settings.max_tokens_limit}; lower 'Max tokens' in the settings."
            )  # fmt: skip
        try:  # off the event loop: tokenizing a big notebook must not stall the server
            context = await asyncio.get_running_loop().run_in_executor(
                service.context_thread, service.context, body
            )
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from exc
        self.set_header("Content-Type", "application/x-ndjson; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self._stream_task = asyncio.ensure_future(self._stream(body, context))
        try:
            await self._stream_task
        except (asyncio.CancelledError, StreamClosedError):
            return  # the browser went away; the engine request is already cancelled
        self.finish()

    def on_connection_close(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()

    def _body(self) -> CompleteRequest:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"The notebook is over {MAX_BODY_BYTES >> 20} MB.")
        try:
            return CompleteRequest.model_validate_json(self.request.body)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "body"
            raise web.HTTPError(400, f"Invalid field '{where}': {error['msg']}.") from exc

    async def _stream(self, body: CompleteRequest, context) -> None:
        await self._send(
            ContextEvent(
                prompt_tokens=context.prefix_tokens + context.suffix_tokens,
                cells_above=context.cells_above,
                cells_below=context.cells_below,
                elided_above=context.elided_above,
                elided_below=context.elided_below,
                facts=context.facts,
            )
        )
        params: dict[str, Any] = {
            "max_tokens": WARM_TOKENS if body.warm else body.max_tokens,
            "temperature": body.temperature,
        }
        if body.seed is not None:
            params["random_seed"] = body.seed
        if not body.multiline:
            params["stop"] = ["\n", "\r"]
        session = None if body.warm else body.session
        started = time.monotonic()
        budget_s = body.time_budget_ms / 1000 if body.time_budget_ms else None
        text, finish, usage = "", None, {}
        try:
            chunks = self.service.link.fim(context.prefix, context.suffix, params, session)
            async for chunk in chunks:
                piece = protocol.piece(chunk)
                delta = piece.text
                if delta and not body.warm:
                    # The first-line time budget: once spent, end at the next line break.
                    if budget_s and time.monotonic() - started > budget_s:
                        cut = _first_line_end(text, delta)
                        if cut is not None:
                            delta, finish = delta[:cut], "time_budget"
                    text += delta
                    if delta:
                        await self._send(DeltaEvent(text=delta))
                    if finish:
                        await chunks.aclose()
                        break
                if piece.finish_reason:
                    finish = piece.finish_reason
                if piece.usage:  # with the finish reason, or in a last chunk (vLLM)
                    usage = piece.usage
        except CodestralError as exc:
            info = ErrorInfo(kind=exc.kind, message=exc.message, fix=exc.fix)
            await self._send(ErrorEvent(error=info))
            return
        await self._send(DoneEvent(finish_reason=finish, usage=usage))

    async def _send(self, event: BaseModel) -> None:
        self.write(event.model_dump_json() + "\n")
        await self.flush()


def _first_line_end(text: str, delta: str) -> int | None:
    """Where in `delta` the first line with content (counting `text` before it) ends."""
    for match in LINE_BREAK.finditer(delta):
        if (text + delta[: match.start()]).strip():
            return match.start()
    return None


class LabService:
    """What the routes share: settings, the engine link and the context builders."""

    def __init__(self, settings: CodestralCompletion):
        self.settings = settings
        self.link = EngineLink(settings)
        self._builders: dict[int, ContextBuilder] = {}
        # One thread builds contexts, so the builders' token-count caches see one caller.
        self.context_thread = ThreadPoolExecutor(1, thread_name_prefix="codestral-context")

    @cached_property
    def counter(self) -> TokenCounter:
        from codestral_engine import codestral_tokenizer

        return TokenCounter(codestral_tokenizer().count)

    def context(self, body: CompleteRequest):
        budget = body.context_tokens or self.settings.context_tokens
        if budget not in self._builders:
            self._builders[budget] = ContextBuilder(
                self.counter, budget=budget, suffix_share=self.settings.suffix_share
            )
        cells = [Cell(c.cell_type, c.source) for c in body.cells]
        builder = self._builders[budget]
        return builder.build(cells, body.cell, body.cursor, body.language, body.facts)


ROUTES = {
    "complete": CompleteHandler,
    "status": StatusHandler,
    "start": StartHandler,
    "probe": ProbeHandler,
}


def setup_handlers(serverapp) -> LabService:
    settings = CodestralCompletion(parent=serverapp)
    codestral = LabService(settings)
    web_app = serverapp.web_app
    web_app.settings["codestral"] = codestral
    base = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$", [(url_path_join(base, "codestral", name), cls) for name, cls in ROUTES.items()]
    )
    return codestral
