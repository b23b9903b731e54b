"""What comes in over HTTP before a route answers: the token check (pure ASGI, so streams and
disconnects pass through untouched), and the body, read within its size limit, parsed as JSON and
validated; each problem becomes the error a client can act on, in Mistral's shape."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from .api_schema import error_json, unsupported

MAX_BODY_BYTES = 8 << 20  # far beyond any prompt that fits 32K tokens
PUBLIC_PATHS = {"/health"}
BODY_TIMEOUT_S = 30.0  # a prompt at the size limit takes milliseconds over loopback


class ValidationFailed(Exception):
    """A body that fails validation: 422 with the detail list Mistral's API documents."""

    def __init__(self, detail: list[dict[str, Any]]):
        super().__init__(detail[0]["msg"])
        self.detail = detail


class APIError(Exception):
    def __init__(
        self, status: int, message: str, retry_after: float | None = None, kind: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.kind = kind  # the error's `type`, when more precise than the status's


class RequireToken:
    """The token on every route but /health; a body framed two ways refused on every route.
    Pure ASGI, so streamed responses and disconnects pass through untouched."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope, receive, send) -> None:
        headers = dict(scope["headers"]) if scope["type"] == "http" else {}
        if b"content-length" in headers and b"transfer-encoding" in headers:
            # Two framings of one body (RFC 9112 6.3): which one a proxy on the way believed
            # is unknowable, so neither is trusted, and the connection closes after this.
            response = error_response(
                400, "The request has both Content-Length and Transfer-Encoding; send one."
            )
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            # The scheme is case-insensitive (RFC 7235): "bearer" is as good as "Bearer".
            valid = scheme.lower() == b"bearer" and hmac.compare_digest(given, self.expected)
            if not valid:
                response = error_response(
                    401,
                    "Missing or wrong API token. Send 'Authorization: Bearer <token>' with the "
                    "token from the engine's connection file (or the --token it was started with).",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def parse(request: Request, model: type[BaseModel], *, mistral_fields: bool = True):
    """The JSON body as `model`; with `mistral_fields`, Mistral's fields this engine does not
    implement are refused by name (the other dialects' routes have their own fields)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and not (media_type == "application/json" or media_type.endswith("+json")):
        raise APIError(
            415,
            f"The request body must be JSON (Content-Type: application/json), not {media_type}.",
        )
    raw = await read_body(request)
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
            400,
            "The request body has text that is not valid Unicode (a lone UTF-16 "
            "surrogate, e.g. a string cut in the middle of an emoji); send whole characters.",
        ) from exc
    except RecursionError as exc:
        raise APIError(400, "The request body's JSON is nested too deeply.") from exc
    except ValueError as exc:  # malformed JSON, or a number too long to read
        raise APIError(400, f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    if mistral_fields and (refused := unsupported(data)):
        raise ValidationFailed(refused)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from exc


class ClientGone(Exception):
    """The client closed its connection before its request had arrived whole."""


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large (from its
    Content-Length, or while it streams in), never read whole first; 408 if it has not
    arrived within BODY_TIMEOUT_S (a client that stalls mid-body holds a connection)."""
    too_large = APIError(
        413, f"The request body is over {MAX_BODY_BYTES >> 20} MB; shorten the prompt."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), BODY_TIMEOUT_S)
    except ClientDisconnect as exc:
        raise ClientGone from exc
    except asyncio.TimeoutError as exc:
        raise APIError(
            408, f"The request body did not arrive within {BODY_TIMEOUT_S:.0f} s; send it whole."
        ) from exc


def error_response(
    status: int, message: str, retry_after: float | None = None, kind: str | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if retry_after else None
    return JSONResponse(error_json(status, message, kind=kind), status_code=status, headers=headers)
