"""A Mistral-compatible HTTP API in front of one engine (Starlette; SSE by sse-starlette).

Routes: POST /v1/fim/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/status
(all need `Authorization: Bearer <token>`) and GET /health (no auth; says only the state).
Errors are JSON in Mistral's shape with the status the problem deserves; a client that goes away
mid-stream cancels its request within one decode step. The token check and the body's
limits are `http_input.py`'s; how the server ends (a grace period, then an in-band error for
what it must cut) is `lifecycle.py`'s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.engine import Engine
from ..core.events import Finished, TextDelta
from ..core.status import EngineStatus
from ..errors import (
    ContextLengthError,
    EngineClosedError,
    EngineError,
    EngineStoppingError,
    InvalidRequestError,
    QueueFullError,
)
from .api_schema import ChatBody, FIMBody, ResponseShape, error_json, validation_json
from .http_input import (
    APIError,
    ClientGone,
    RequireToken,
    ValidationFailed,
    error_response,
    parse,
)
from .state import LOADING_RETRY_AFTER_S, STOPPING_TYPES, ServerState

# Names clients commonly send for Codestral; all mean the one model this server has.
MODEL_ALIASES = ("codestral-latest", "codestral-2405", "codestral-22b")


def create_app(state: ServerState) -> Starlette:
    """Mistral's routes on `state`'s engine, behind the token check, errors in Mistral's shape."""
    app = Starlette(
        routes=[*_info_routes(state), *_completion_routes(state)],
        exception_handlers=_exception_handlers(),
        middleware=[Middleware(RequireToken, token=state.token)],
    )
    # "/v1/status/" is a 404, not a 307 to the client's own Host header.
    app.router.redirect_slashes = False
    return app


def _info_routes(state: ServerState) -> list[Route]:
    """What the server is and holds: /health, /v1/status, /v1/models."""

    async def health(_request: Request) -> Response:
        # 200 only when requests can be served: a client that waits for /health may then call.
        # No details here (no auth): the status route says why a load failed.
        code = 200 if state.state == "ready" else 503
        return JSONResponse({"status": state.state}, status_code=code)

    async def status(_request: Request) -> Response:
        status = EngineStatus.of(
            state.engine,
            state.state,
            progress=state.progress,
            stage=state.stage,
            error=state.error,
            model=state.model_id,
            model_path=str(state.model_path),
            uptime_s=time.time() - state.started,
        )
        return JSONResponse(status.model_dump())

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

    return [
        Route("/health", health, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
    ]


def _completion_routes(state: ServerState) -> list[Route]:
    """FIM and chat completions, each counted as activity until its answer is sent."""

    async def fim(request: Request) -> Response:
        return await _active(state, _fim(request))

    async def chat(request: Request) -> Response:
        return await _active(state, _chat(request))

    async def _fim(request: Request) -> Response:
        body = await parse(request, FIMBody)
        engine = _engine_for(state, body.model)
        if state.log_prompts:
            _log({"event": "fim_prompt", "prompt": body.prompt, "suffix": body.suffix or ""})
        submitted = await _submit(
            state, lambda: engine.fim(body.prompt, body.suffix or "", **body.engine_options())
        )
        return await _respond_running(state, body, submitted, request)

    async def _chat(request: Request) -> Response:
        body = await parse(request, ChatBody)
        engine = _engine_for(state, body.model)
        if state.log_prompts:
            _log({"event": "chat_messages", "messages": body.messages})
        submitted = await _submit(
            state, lambda: engine.chat(body.messages, **body.engine_options())
        )
        return await _respond_running(state, body, submitted, request)

    return [
        Route("/v1/fim/completions", fim, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ]


def _exception_handlers() -> dict:
    """Every failure answered in Mistral's error shape with the status it deserves."""
    return {
        APIError: _api_error,
        ClientGone: _client_gone,
        ValidationFailed: _validation_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }


async def _active(state: ServerState, handling) -> _Counted:
    """Counts a request as activity until its response (a whole stream) has been sent."""
    try:
        state.begin()
    except APIError:
        handling.close()  # never started
        raise
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
            self.state.running.discard(getattr(self.response, "engine_request", None))


async def _respond_running(state: ServerState, body, submitted, http: Request) -> Response:
    return await track_running(state, submitted, _response(body, submitted, http))


async def track_running(state: ServerState, submitted, responding) -> Response:
    """The response `responding` makes, with its engine request noted as running (a shutdown
    cuts it with an error its client receives) until the response has been sent
    (`_Counted`), or until answering failed. Every route that answers from the engine, in
    any dialect, goes through here."""
    state.running.add(submitted)
    if state.cut_error is not None:  # tokenized after the cut: cut too
        state.cut_one(submitted)
    try:
        response = await responding
    except BaseException:
        state.running.discard(submitted)
        raise
    response.engine_request = submitted
    return response


def _served(state: ServerState) -> str:
    return ", ".join((state.model_id, *MODEL_ALIASES))


def _engine_for(state: ServerState, model: str) -> Engine:
    if model not in (state.model_id, *MODEL_ALIASES):
        raise APIError(404, f"Unknown model '{model}'. This server serves: {_served(state)}.")
    return state.ready_engine()


async def _submit(state: ServerState, make):
    """Tokenize and queue a request, off the event loop (a long prompt takes seconds to
    tokenize), on one thread so requests of one session keep their order."""
    try:
        return await asyncio.get_running_loop().run_in_executor(state.tokenizing, make)
    except ContextLengthError as exc:
        raise APIError(413, str(exc)) from exc
    except InvalidRequestError as exc:  # a parameter out of its range: validation, as Mistral
        raise ValidationFailed([{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from exc
    except QueueFullError as exc:
        raise APIError(429, str(exc), retry_after=exc.retry_after_s) from exc
    except EngineClosedError as exc:
        raise APIError(503, str(exc), retry_after=LOADING_RETRY_AFTER_S) from exc


async def _response(body, submitted, http: Request) -> Response:
    completion = ResponseShape(body.model)
    if body.stream:  # sse-starlette stops the generator when the client goes away
        return EventSourceResponse(_sse(completion, submitted), ping=10)
    collected = await unless_gone(_collect(submitted), submitted, http)
    if collected is None:
        return Response(status_code=499)  # nobody reads it
    text, final = collected
    return JSONResponse(completion.whole(text, final))


async def unless_gone(work, submitted, http: Request):
    """What the coroutine `work` (reading `submitted`'s answer whole) returns, or None, with
    the engine request cancelled, when the client goes away first: no generating for no one."""
    running = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_disconnected(http))
    try:
        await asyncio.wait({running, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if not running.done():
        submitted.cancel()
        running.cancel()
        return None
    return running.result()


async def _collect(submitted) -> tuple[str, Finished]:
    parts = []
    try:
        async for event in submitted.events():
            if isinstance(event, TextDelta):
                parts.append(event.text)
    except EngineStoppingError as exc:
        raise APIError(503, str(exc), retry_after=1, kind=STOPPING_TYPES[exc.reason]) from exc
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
    except EngineStoppingError as exc:  # in-band: the status line has been sent
        yield {"data": json.dumps(error_json(503, str(exc), kind=STOPPING_TYPES[exc.reason]))}
        return  # no [DONE]: the answer is not complete
    except EngineError as exc:
        yield {"data": json.dumps(error_json(500, str(exc)))}
        return
    yield {"data": "[DONE]"}


def _log(record: dict[str, Any]) -> None:
    print(f"codestral-engine: {json.dumps(record)}", file=sys.stderr, flush=True)


async def _api_error(_request: Request, exc: APIError) -> Response:
    return error_response(exc.status, str(exc), exc.retry_after, kind=exc.kind)


async def _http_error(_request: Request, exc: HTTPException) -> Response:
    response = error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. a 405's Allow
    return response


async def _validation_error(_request: Request, exc: ValidationFailed) -> Response:
    return JSONResponse(validation_json(exc.detail), status_code=422)


async def _client_gone(request: Request, _exc: ClientGone) -> Response:
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    _log({"event": "client_gone", "client": client, "path": request.url.path})
    return Response(status_code=499)  # nobody reads it


async def _internal_error(_request: Request, exc: Exception) -> Response:
    return error_response(500, f"Internal error: {exc}. The server is still running.")
