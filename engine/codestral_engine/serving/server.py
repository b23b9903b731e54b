"""A Mistral-compatible HTTP API in front of one engine (Starlette; SSE by sse-starlette).

Routes: POST /v1/fim/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/status
(all need `Authorization: Bearer <token>`) and GET /health (no auth; says only the state).
Errors are JSON in Mistral's shape with the status the problem deserves; a client that goes away
mid-stream cancels its request within one decode step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.engine import Engine, load
from ..core.events import Finished, TextDelta
from ..errors import (
    ContextLengthError,
    EngineClosedError,
    EngineError,
    InvalidRequestError,
    QueueFullError,
)
from .api_schema import ChatBody, FIMBody, ResponseShape, error_json, validation_json

# Names clients commonly send for Codestral; all mean the one model this server has.
MODEL_ALIASES = ("codestral-latest", "codestral-2405", "codestral-22b")
MAX_BODY_BYTES = 8 << 20  # far beyond any prompt that fits 32K tokens
PUBLIC_PATHS = {"/health"}
LOADING_RETRY_AFTER_S = 5


class ValidationFailed(Exception):
    """A body that fails validation: 422 with the detail list Mistral's API documents."""

    def __init__(self, detail: list[dict[str, Any]]):
        super().__init__(detail[0]["msg"])
        self.detail = detail


class APIError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class ServerState:
    """What the routes share: the engine once loaded, and what the status route reports."""

    model_path: Path
    token: str
    backend: str = "auto"
    state: str = "loading"  # loading | ready | error
    progress: float = 0.0
    stage: str = "starting"
    error: str | None = None
    engine: Engine | None = None
    started: float = field(default_factory=time.time)
    log_prompts: bool = False  # print each FIM prompt and chat request to stderr (debugging)
    # Activity for the idle timeout: completion and chat requests, not status polls.
    open_requests: int = 0
    last_activity: float = field(default_factory=time.monotonic)

    def begin(self) -> None:
        self.open_requests += 1
        self.last_activity = time.monotonic()

    def end(self) -> None:
        self.open_requests -= 1
        self.last_activity = time.monotonic()

    def idle_seconds(self) -> float | None:
        """How long nothing has been asked of the ready model; None while a request is open
        or the model loads."""
        if self.open_requests or self.state == "loading":
            return None
        return time.monotonic() - self.last_activity

    @property
    def model_id(self) -> str:
        return self.model_path.name

    def load(self, **options: Any) -> None:
        """Load the model (call on a background thread); state follows along."""
        try:
            self.engine = load(self.model_path, self.backend, progress=self._progress, **options)
            self.last_activity = time.monotonic()  # idle time counts from being ready
            self.state = "ready"
        except EngineError as exc:
            self.error, self.state = str(exc), "error"
        except Exception as exc:  # out of memory, an unreadable file: the same, not a hang
            self.error, self.state = f"{type(exc).__name__}: {exc}", "error"

    def load_in_background(self, **options: Any) -> threading.Thread:
        thread = threading.Thread(target=self.load, kwargs=options, name="model-load", daemon=True)
        thread.start()
        return thread

    def _progress(self, fraction: float, stage: str) -> None:
        self.progress, self.stage = fraction, stage

    def ready_engine(self) -> Engine:
        if self.state == "loading":
            raise APIError(
                503,
                f"The model is still loading ({self.progress:.0%}: {self.stage}). Retry shortly.",
                retry_after=LOADING_RETRY_AFTER_S,
            )
        if self.state == "error" or self.engine is None:
            raise APIError(503, f"The model failed to load: {self.error}")
        return self.engine


def create_app(state: ServerState) -> Starlette:
    async def health(_request: Request) -> Response:
        # 200 only when requests can be served: a client that waits for /health may then call.
        # No details here (no auth): the status route says why a load failed.
        code = 200 if state.state == "ready" else 503
        return JSONResponse({"status": state.state}, status_code=code)

    async def status(_request: Request) -> Response:
        engine = state.engine
        body = {
            "state": state.state,
            "progress": state.progress,
            "stage": state.stage,
            "error": state.error,
            "model": state.model_id,
            "model_path": str(state.model_path),
            "pid": os.getpid(),
            "uptime_s": time.time() - state.started,
            "last_request": _last_request(engine),
        }
        if engine is not None:
            body |= {
                "layout": engine.checkpoint.layout,
                "backend": engine.backend.name,
                "device": engine.backend.device,
                "threads": getattr(engine.backend, "threads", None),
                "context_length": engine.context_length,
                "queue_length": engine.queue_length,
                "running_requests": engine.running_requests,
                "memory_bytes": _process_memory(),
                "prompt_cache_bytes": engine.prompt_cache.nbytes,
                "finished_requests": engine.finish_counts,
            }
        return JSONResponse(body)

    def card() -> dict[str, Any]:
        context = state.engine.context_length if state.engine else None
        return {
            "id": state.model_id,
            "object": "model",
            "created": int(state.started),
            "owned_by": "codestral-engine",
            "name": state.model_id,
            "aliases": list(MODEL_ALIASES),
            "max_context_length": context,
            "capabilities": {"completion_chat": True, "completion_fim": True},
            "type": "base",
        }

    async def models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [card()]})

    async def model(request: Request) -> Response:
        name = request.path_params["model_id"]
        if name not in (state.model_id, *MODEL_ALIASES):
            raise APIError(404, f"Unknown model '{name}'. This server serves: {_served(state)}.")
        return JSONResponse(card())

    async def fim(request: Request) -> Response:
        return await _active(state, _fim(request))

    async def chat(request: Request) -> Response:
        return await _active(state, _chat(request))

    async def _fim(request: Request) -> Response:
        body = await _parse(request, FIMBody)
        engine = _engine_for(state, body.model)
        if state.log_prompts:
            _log({"event": "fim_prompt", "prompt": body.prompt, "suffix": body.suffix or ""})
        submitted = _submit(
            lambda: engine.fim(body.prompt, body.suffix or "", **body.engine_options())
        )
        return await _respond(body, submitted, request)

    async def _chat(request: Request) -> Response:
        body = await _parse(request, ChatBody)
        engine = _engine_for(state, body.model)
        if state.log_prompts:
            _log({"event": "chat_messages", "messages": body.messages})
        submitted = _submit(lambda: engine.chat(body.messages, **body.engine_options()))
        return await _respond(body, submitted, request)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/v1/fim/completions", fim, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ]
    handlers = {
        APIError: _api_error,
        ValidationFailed: _validation_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    middleware = [Middleware(_RequireToken, token=state.token)]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)


class _RequireToken:
    """Pure ASGI, so streamed responses and disconnects pass through untouched."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            # The scheme is case-insensitive (RFC 7235): "bearer" is as good as "Bearer".
            valid = scheme.lower() == b"bearer" and hmac.compare_digest(given, self.expected)
            if not valid:
                response = _error_response(
                    401,
                    "Missing or wrong API token. Send 'Authorization: Bearer <token>' with the "
                    "token from the engine's connection file (or the --token it was started with).",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _parse(request: Request, model: type[FIMBody] | type[ChatBody]):
    raw = await _read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"The request body is not valid JSON in UTF-8: {exc}.") from exc
    try:
        data = json.loads(text)
        # Lone UTF-16 surrogates ("\ud83d" escapes: a string cut mid-emoji) are valid JSON
        # but no text: refuse them here rather than fail deep in the tokenizer.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(
            400, "The request body has text that is not valid Unicode (a lone UTF-16 "
            "surrogate, e.g. a string cut in the middle of an emoji); send whole characters.",
        ) from exc  # fmt: skip
    except RecursionError as exc:
        raise APIError(400, "The request body's JSON is nested too deeply.") from exc
    except ValueError as exc:  # malformed JSON, or a number too long to read
        raise APIError(400, f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
             for e in exc.errors(include_url=False, include_input=False)]
        ) from exc  # fmt: skip


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large (from its
    Content-Length, or while it streams in), never read whole first."""
    too_large = APIError(
        413, f"The request body is over {MAX_BODY_BYTES >> 20} MB; shorten the prompt."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _active(state: ServerState, handling) -> _Counted:
    """Counts a request as activity until its response (a whole stream) has been sent."""
    state.begin()
    try:
        return _Counted(await handling, state)
    except BaseException:
        state.end()
        raise


class _Counted:
    """A response that ends its request's activity once sent, however sending ends."""

    def __init__(self, response: Response, state: ServerState):
        self.response, self.state = response, state

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.state.end()


def _served(state: ServerState) -> str:
    return ", ".join((state.model_id, *MODEL_ALIASES))


def _engine_for(state: ServerState, model: str) -> Engine:
    if model not in (state.model_id, *MODEL_ALIASES):
        raise APIError(404, f"Unknown model '{model}'. This server serves: {_served(state)}.")
    return state.ready_engine()


def _submit(make):
    try:
        return make()
    except ContextLengthError as exc:
        raise APIError(413, str(exc)) from exc
    except InvalidRequestError as exc:  # a parameter out of its range: validation, as Mistral
        raise ValidationFailed([{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from exc
    except QueueFullError as exc:
        raise APIError(429, str(exc), retry_after=exc.retry_after_s) from exc
    except EngineClosedError as exc:
        raise APIError(503, str(exc), retry_after=LOADING_RETRY_AFTER_S) from exc


async def _respond(body, submitted, http: Request) -> Response:
    completion = ResponseShape(body.model)
    if body.stream:  # sse-starlette stops the generator when the client goes away
        return EventSourceResponse(_sse(completion, submitted), ping=10)
    collecting = asyncio.ensure_future(_collect(submitted))
    watching = asyncio.ensure_future(_disconnected(http))
    try:
        await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if not collecting.done():  # the client left: stop generating for no one
        submitted.cancel()
        collecting.cancel()
        return Response(status_code=499)  # nobody reads it
    text, final = collecting.result()
    return JSONResponse(completion.whole(text, final))


async def _collect(submitted) -> tuple[str, Finished]:
    parts = []
    try:
        async for event in submitted.events():
            if isinstance(event, TextDelta):
                parts.append(event.text)
    except EngineError as exc:
        raise APIError(500, str(exc)) from exc
    return "".join(parts), event


async def _disconnected(http: Request) -> None:
    """Returns when the client of a non-streaming request goes away (the body is read)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _sse(completion: ResponseShape, request):
    yield {"data": json.dumps(completion.chunk(None))}
    try:
        async for event in request.events():  # leaving early (disconnect) cancels the request
            if isinstance(event, TextDelta) and event.text:
                yield {"data": json.dumps(completion.chunk(event.text))}
            elif isinstance(event, Finished):
                yield {"data": json.dumps(completion.chunk("", event))}
    except EngineError as exc:
        yield {"data": json.dumps(error_json(500, str(exc)))}
    yield {"data": "[DONE]"}


def _last_request(engine: Engine | None) -> dict[str, Any]:
    final = engine.last_finished if engine else None
    if final is None:
        return {}
    usage = final.usage
    return {
        "time_to_first_token_s": usage.time_to_first_token_s,
        "decode_tokens_per_s": usage.decode_tokens_per_s,
        "prompt_tokens": usage.prompt_tokens,
        "cached_prompt_tokens": usage.cached_prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "draft_tokens": usage.draft_tokens,
        "accepted_draft_tokens": usage.accepted_draft_tokens,
        "finish_reason": final.finish_reason,
    }


def _log(record: dict[str, Any]) -> None:
    print(f"codestral-engine: {json.dumps(record)}", file=sys.stderr, flush=True)


def _process_memory() -> int:
    return psutil.Process().memory_info().rss


def _error_response(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if retry_after else None
    return JSONResponse(error_json(status, message), status_code=status, headers=headers)


async def _api_error(_request: Request, exc: APIError) -> Response:
    return _error_response(exc.status, str(exc), exc.retry_after)


async def _http_error(_request: Request, exc: HTTPException) -> Response:
    response = _error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. a 405's Allow
    return response


async def _validation_error(_request: Request, exc: ValidationFailed) -> Response:
    return JSONResponse(validation_json(exc.detail), status_code=422)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    return _error_response(500, f"Internal error: {exc}. The server is still running.")
