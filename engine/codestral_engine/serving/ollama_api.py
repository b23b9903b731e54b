"""Ollama's API on the engine, for the tools that speak it (Continue's Ollama provider, Zed,
Notebook Intelligence, CellSense, Open WebUI): the model loaded once serves them too.

Reference: Ollama's docs/api.md. Routes: POST /api/generate, POST /api/chat, GET /api/tags,
POST /api/show, GET /api/ps, GET /api/version, and GET / ("Ollama is running").

- /api/generate with a `suffix` (even "": a cursor at the end of a file) is Codestral FIM by
  token ids, exactly `encode_fim(prompt, suffix)`; without one it is one instruct turn (with
  `system`), as Ollama's Codestral template makes it; `raw` takes a ready prompt whose control
  tokens (`<s>[SUFFIX]...[PREFIX]...`) become their ids. An empty prompt only loads (done_reason
  "load"). `context` echoes the prompt and completion ids.
- options: num_predict (-1, -2: no limit), temperature (default 0: greedy, the engine's
  default), top_p, seed, stop; Ollama's other options (num_ctx, top_k, ...) are accepted and
  have no effect (Ollama ignores what it does not know too).
- keep_alive: the engine is shared (the notebook, the editor), so no client unloads it. Any
  request counts as activity; an engine started with --idle-timeout exits that long after the
  last request whatever keep_alive says, one started by hand stays. keep_alive 0 with an empty
  prompt answers done_reason "unload" and leaves the model loaded. /api/ps says when it expires.
- Errors: {"error": message}, with the status the Mistral routes give the same problem.

The request and reply bodies are `ollama_shapes.py`'s.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.engine import Engine
from ..core.events import Finished, TextDelta
from ..errors import EngineError
from .dialect import collect_unless_gone, dialect_route
from .http_input import parse
from .ollama_shapes import (
    Body,
    ChatBody,
    GenerateBody,
    ShowBody,
    assistant,
    card,
    done_fields,
    head,
    iso,
    line,
    seconds,
    shown,
    tagged,
)
from .server import (
    MODEL_ALIASES,
    APIError,
    ServerState,
    _active,
    _log,
    _served,
    _submit,
    track_running,
)

OLLAMA_VERSION = "0.12.0"  # what /api/version reports: clients gate features on it
OLLAMA_NAMES = ("codestral:latest", "codestral:22b")  # what users put in their tool's config
PATHS = ("/", "/api/generate", "/api/chat", "/api/tags", "/api/show", "/api/ps", "/api/version")
_FOREVER = datetime(2318, 1, 1, tzinfo=timezone.utc)  # Ollama's "never expires"


def error_body(_status: int, message: str) -> dict[str, Any]:
    return {"error": message}


def routes(state: ServerState, idle_timeout: float | None) -> list[Route]:
    """Ollama's routes on `state`'s engine."""
    ollama = _Ollama(state, idle_timeout)
    handlers = [("/", ollama.root, ["GET"]), ("/api/generate", ollama.generate, ["POST"]),
                ("/api/chat", ollama.chat, ["POST"]), ("/api/tags", ollama.tags, ["GET"]),
                ("/api/show", ollama.show, ["POST"]), ("/api/ps", ollama.ps, ["GET"]),
                ("/api/version", ollama.version, ["GET"])]  # fmt: skip
    return [dialect_route(path, fn, methods, error_body) for path, fn, methods in handlers]


class _Ollama:
    """Ollama's handlers on one server's state; `idle_timeout` is what /api/ps reports."""

    def __init__(self, state: ServerState, idle_timeout: float | None):
        self.state, self.idle_timeout = state, idle_timeout

    def names(self) -> list[str]:
        return [*OLLAMA_NAMES, tagged(self.state.model_id)]

    def engine_for(self, model: str) -> Engine:
        if tagged(model) not in {*self.names(), *map(tagged, MODEL_ALIASES)}:
            raise APIError(
                404,
                f"model '{model}' not found; this server serves "
                f"{', '.join(self.names())} (also {_served(self.state)}).",
            )
        return self.state.ready_engine()

    async def generate(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        body = await parse(request, GenerateBody, mistral_fields=False)
        body.refuse_unsupported()
        if body.template or body.context:
            raise APIError(
                400,
                "template and context are not supported: Codestral's prompt "
                "is built by the engine (or send raw: true).",
            )
        engine, options = self.engine_for(body.model), body.options.engine_options()
        if not body.prompt and body.suffix is None:  # Ollama's "load the model" request
            self._touch()
            reason = "unload" if seconds(body.keep_alive) == 0 else "load"
            done = {**head(body.model), "response": "", "done": True, "done_reason": reason}
            return _one_or_stream(body.stream, done)
        submit = self._generation(engine, body, options)
        answer = _answer(self.state, submit, body, request, started, "response")
        return await _active(self.state, answer)

    def _generation(self, engine: Engine, body: GenerateBody, options: dict[str, Any]):
        """What tokenizes and queues a /api/generate request: raw, FIM or an instruct turn."""
        log = self.state.log_prompts
        if body.raw:
            if len(body.prompt) > engine.context_length * engine.tokenizer.max_token_chars:
                raise APIError(
                    413,
                    f"The prompt cannot fit the model's context window of "
                    f"{engine.context_length} tokens; shorten it.",
                )
            if log:
                _log({"event": "raw_prompt", "prompt": body.prompt})

            def submit():  # tokenized off the event loop, as every prompt is
                return engine.submit(engine.tokenizer.encode_raw(body.prompt), **options)

            return submit
        if body.suffix is not None:
            if log:
                _log({"event": "fim_prompt", "prompt": body.prompt, "suffix": body.suffix})
            return partial(engine.fim, body.prompt, body.suffix, **options)
        turn = [{"role": "user", "content": body.prompt}]
        system = [{"role": "system", "content": body.system}] if body.system else []
        return partial(engine.chat, system + turn, **options)

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        body = await parse(request, ChatBody, mistral_fields=False)
        body.refuse_unsupported()
        if body.tools:
            raise APIError(400, f"{body.model} does not support tools")
        if any(m.images for m in body.messages):
            raise APIError(400, "Codestral reads text only; send messages without images.")
        engine, options = self.engine_for(body.model), body.options.engine_options()
        if not body.messages:  # a load request, as in Ollama
            self._touch()
            done = {**head(body.model), "message": assistant(""), "done": True,
                    "done_reason": "load"}  # fmt: skip
            return _one_or_stream(body.stream, done)
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        if self.state.log_prompts:
            _log({"event": "chat_messages", "messages": messages})
        submit = partial(engine.chat, messages, **options)
        answer = _answer(self.state, submit, body, request, started, "message")
        return await _active(self.state, answer)

    def _touch(self) -> None:
        """A load request counts as activity (it keeps an idle-timed engine up)."""
        self.state.begin()
        self.state.end()

    async def tags(self, _request: Request) -> Response:
        return JSONResponse({"models": [card(self.state, name) for name in self.names()]})

    async def show(self, request: Request) -> Response:
        body = await parse(request, ShowBody, mistral_fields=False)
        name = body.model or body.name
        if not name:
            raise APIError(400, "model is required")
        return JSONResponse(shown(self.state, self.engine_for(name)))

    async def ps(self, _request: Request) -> Response:
        state, idle_timeout = self.state, self.idle_timeout
        if state.state != "ready":
            return JSONResponse({"models": []})
        idle = state.idle_seconds() or 0.0
        left = timedelta(seconds=max(0.0, (idle_timeout or 0) - idle))
        expires = datetime.now(timezone.utc) + left if idle_timeout else _FOREVER
        running = [
            {
                **card(state, name),
                "expires_at": iso(expires),
                "size_vram": 0,
                "context_length": state.ready_engine().context_length,
            }
            for name in self.names()[:1]
        ]
        return JSONResponse({"models": running})

    async def version(self, _request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def root(self, _request: Request) -> Response:
        return PlainTextResponse("Ollama is running")


async def _answer(
    state: ServerState, submit, body: Body, http: Request, started: int, field: str
) -> Response:
    """Tokenize and queue the request (off the event loop), then answer it, cut with an error
    line if the server exits meanwhile."""
    submitted = await _submit(state, submit)
    return await track_running(state, submitted, _reply(body, submitted, http, started, field))


async def _reply(body: Body, submitted, http: Request, started: int, field: str) -> Response:
    if body.stream:
        return StreamingResponse(
            _ndjson(body.model, submitted, started, field), media_type="application/x-ndjson"
        )
    collected = await collect_unless_gone(submitted, http)
    if collected is None:
        return Response(status_code=499)  # nobody reads it
    text, final = collected
    content = text if field == "response" else assistant(text)
    return JSONResponse({**head(body.model), field: content, **done_fields(final, started, field)})


async def _ndjson(model: str, submitted, started: int, field: str) -> AsyncIterator[str]:
    empty = "" if field == "response" else assistant("")
    try:
        async for event in submitted.events():  # leaving early (disconnect) cancels it
            if isinstance(event, TextDelta) and event.text:
                content = event.text if field == "response" else assistant(event.text)
                yield line({**head(model), field: content, "done": False})
            elif isinstance(event, Finished):
                yield line({**head(model), field: empty, **done_fields(event, started, field)})
    except EngineError as exc:
        yield line({"error": str(exc)})


def _one_or_stream(stream: bool, body: dict[str, Any]) -> Response:
    if stream:
        return StreamingResponse(iter([line(body)]), media_type="application/x-ndjson")
    return JSONResponse(body)
