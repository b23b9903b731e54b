"""Jupyter server routes for ghost text, under `<base_url>/codestral/`, all authenticated.

POST complete  cells + cursor in, newline-delimited JSON out: a `context` line (what the prompt
               holds), `delta` lines (text), then `done` (finish reason, usage) or `error`.
               Closing the connection cancels the engine's request within a decode step.
GET  status    engine state and progress, the last request's timings, the server's settings.
POST start     start the shared engine now (it also starts on the first completion).
POST fix       a failed cell and its error output in, the corrected cell (or, in the teaching
               hints mode, a sentence or two on the error) out, as the same JSON lines.
GET  probe     the code the extension runs in a kernel after an execution to learn its live
               objects (context/kernel_facts.py), whose lines come back as `facts` in complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from pydantic import BaseModel, ValidationError
from tornado import web
from tornado.iostream import StreamClosedError

from ..client import shapes
from ..context import fix
from ..context.kernel_facts import probe_request
from ..errors import CodestralError
from .engine_link import CodestralCompletion, EngineLink
from .prompts import LabPrompts
from .wire import (
    CompleteRequest,
    ContextEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    FixRequest,
    LabSettings,
    LabStatus,
)

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
        self.finish(await self.service.status())


class ProbeHandler(_Base):
    """What the extension runs in a kernel after an execution to learn its live objects."""

    @web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps(probe_request()))


class StartHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        self.service.link.start()
        self.finish(await self.service.status())


class _Streaming(_Base):
    """A POST whose answer is newline-delimited JSON events, cancelled with its connection:
    refused where the server turns completions off, its body parsed as `request_model`, then
    answered by `respond`."""

    request_model: type[BaseModel]
    _stream_task: asyncio.Task | None = None

    @web.authenticated
    async def post(self) -> None:
        if not self.service.settings.enabled:
            return self.fail(
                CodestralError(
                    "Completions are turned off on this Jupyter server.",
                    403,
                    kind="disabled",
                    fix="Ask the server's administrator (CodestralCompletion.enabled).",
                )
            )
        await self.respond(self.parse(self.request_model))

    async def respond(self, body: Any) -> None:
        raise NotImplementedError

    def parse(self, model: type[BaseModel]) -> Any:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"The notebook is over {MAX_BODY_BYTES >> 20} MB.")
        try:
            return model.model_validate_json(self.request.body)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "body"
            raise web.HTTPError(400, f"Invalid field '{where}': {error['msg']}.") from exc

    async def in_context_thread(self, build, *args):
        """`build(*args)` off the event loop: tokenizing a big notebook must not stall it."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.service.context_thread, build, *args
            )
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from exc

    async def stream_events(self, events) -> None:
        """Send what the coroutine `events` sends (with `send_event`), until the browser leaves."""
        self.set_header("Content-Type", "application/x-ndjson; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self._stream_task = asyncio.ensure_future(events)
        try:
            await self._stream_task
        except (asyncio.CancelledError, StreamClosedError):
            return  # the browser went away; the engine request is already cancelled
        self.finish()

    def on_connection_close(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()

    async def send_event(self, event: BaseModel) -> None:
        self.write(event.model_dump_json() + "\n")
        await self.flush()

    async def send_error_event(self, exc: CodestralError) -> None:
        info = ErrorInfo(kind=exc.kind, message=exc.message, fix=exc.fix)
        await self.send_event(ErrorEvent(error=info))


class CompleteHandler(_Streaming):
    request_model = CompleteRequest

    async def respond(self, body: CompleteRequest) -> None:
        if body.max_tokens > self.service.settings.max_tokens_limit:
            raise web.HTTPError(
                400,
                f"max_tokens is above this server's limit of "
                f"{self.service.settings.max_tokens_limit}; lower 'Max tokens' in the settings.",
            )
        context = await self.in_context_thread(self.service.prompts.fim_context, body)
        await self.stream_events(self._stream(body, context))

    async def _stream(self, body: CompleteRequest, context) -> None:
        await self.send_event(
            ContextEvent(
                prompt_tokens=context.prefix_tokens + context.suffix_tokens,
                cells_above=context.cells_above,
                cells_below=context.cells_below,
                elided_above=context.elided_above,
                elided_below=context.elided_below,
                facts=context.facts,
                definitions=context.definitions,
            )
        )
        params = shapes.Sampling(
            max_tokens=WARM_TOKENS if body.warm else body.max_tokens,
            temperature=body.temperature,
            random_seed=body.seed,
            stop=None if body.multiline else ["\n", "\r"],
        )
        session = None if body.warm else body.session
        started = time.monotonic()
        budget_s = body.time_budget_ms / 1000 if body.time_budget_ms else None
        text, finish, usage = "", None, None
        try:
            chunks = self.service.link.fim(context.prefix, context.suffix, params, session)
            async for piece in chunks:
                delta = piece.text
                if delta and not body.warm:
                    # The first-line time budget: once spent, end at the next line break.
                    if budget_s and time.monotonic() - started > budget_s:
                        cut = _first_line_end(text, delta)
                        if cut is not None:
                            delta, finish = delta[:cut], "time_budget"
                    text += delta
                    if delta:
                        await self.send_event(DeltaEvent(text=delta))
                    if finish:
                        await chunks.aclose()
                        break
                if piece.finish_reason:
                    finish = piece.finish_reason
                if piece.usage:  # with the finish reason, or in a last chunk (vLLM)
                    usage = piece.usage
        except CodestralError as exc:
            return await self.send_error_event(exc)
        await self.send_event(DoneEvent(finish_reason=finish, usage=usage))


class FixHandler(_Streaming):
    """A corrected cell (or, in the hints mode, an explanation) for a failed cell, streamed as
    `delta` events of the cleaned proposal, then `done`."""

    request_model = FixRequest

    async def respond(self, body: FixRequest) -> None:
        try:
            prompts = self.service.prompts
            messages, max_tokens = await self.in_context_thread(prompts.fix_request, body)
        except CodestralError as exc:  # the cell is too long to be fixed whole
            return self.fail(exc)
        await self.stream_events(self._stream(body, messages, max_tokens))

    async def _stream(self, body: FixRequest, messages, max_tokens: int) -> None:
        params = shapes.Sampling(max_tokens=max_tokens, temperature=0.0)
        cleaner = fix.ProposalFilter() if body.mode == "fix" else None
        finish, usage = None, None
        try:
            chunks = self.service.link.chat(messages, params)
            async with contextlib.aclosing(chunks):
                async for piece in chunks:
                    text = cleaner.feed(piece.text) if cleaner else piece.text
                    if text:
                        await self.send_event(DeltaEvent(text=text))
                    finish = piece.finish_reason or finish
                    usage = piece.usage or usage
                    if cleaner and cleaner.closed:  # prose after the code: not wanted
                        finish = "stop"
                        break
        except CodestralError as exc:
            return await self.send_error_event(exc)
        if cleaner and (rest := cleaner.finish()):
            await self.send_event(DeltaEvent(text=rest))
        await self.send_event(DoneEvent(finish_reason=finish, usage=usage))


def _first_line_end(text: str, delta: str) -> int | None:
    """Where in `delta` the first line with content (counting `text` before it) ends."""
    for match in LINE_BREAK.finditer(delta):
        if (text + delta[: match.start()]).strip():
            return match.start()
    return None


class LabService:
    """What the routes share: settings, the engine link and the prompts' builder."""

    def __init__(self, settings: CodestralCompletion, root_dir: str):
        self.settings = settings
        self.link = EngineLink(settings)
        self.prompts = LabPrompts(settings, root_dir)
        # One thread builds prompts, so the builders' token-count caches see one caller.
        self.context_thread = ThreadPoolExecutor(1, thread_name_prefix="codestral-context")

    async def status(self) -> str:
        """The status route's JSON: the engine's status, where it runs and this server's
        settings."""
        status = await self.link.status()
        settings = self.settings
        return LabStatus(
            **status.model_dump(),
            engine=settings.engine,
            enabled=settings.enabled,
            # What a terminal runs to download the weights (this server's own Python).
            pull_command=f"{shlex.quote(sys.executable)} -m codestral_engine pull",
            settings=LabSettings(
                enabled=settings.enabled,
                context_tokens=settings.context_tokens,
                suffix_share=settings.suffix_share,
                max_tokens_limit=settings.max_tokens_limit,
            ),
        ).model_dump_json()


ROUTES = {
    "complete": CompleteHandler,
    "status": StatusHandler,
    "start": StartHandler,
    "probe": ProbeHandler,
    "fix": FixHandler,
}


def setup_handlers(serverapp) -> LabService:
    settings = CodestralCompletion(parent=serverapp)
    codestral = LabService(settings, serverapp.root_dir)
    web_app = serverapp.web_app
    web_app.settings["codestral"] = codestral
    base = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$", [(url_path_join(base, "codestral", name), cls) for name, cls in ROUTES.items()]
    )
    return codestral
