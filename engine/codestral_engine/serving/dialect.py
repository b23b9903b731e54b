"""What the dialect routes (Ollama's, llama.cpp's) share with each other and with the Mistral
routes: the error rules, and a non-streaming completion that is cancelled when its client goes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.events import Finished
from .api_schema import validation_json
from .server import APIError, ValidationFailed, _collect, unless_gone

log = logging.getLogger(__name__)

ErrorBody = Callable[[int, str], dict[str, Any]]
Handler = Callable[[Request], Awaitable[Response]]


def dialect_route(path: str, handler: Handler, methods: list[str], error_body: ErrorBody) -> Route:
    """A route whose failures answer in its dialect's error shape, with the status the Mistral
    routes give the same problem (bad input is a 4xx, never a 500)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as exc:
            status, message, retry = exc.status, str(exc), exc.retry_after
        except ValidationFailed as exc:
            status, message, retry = 422, validation_json(exc.detail)["message"], None
        except Exception as exc:  # the server keeps serving; the client learns what broke
            log.exception("%s failed", path)
            message = f"Internal error: {exc}. The server is still running."
            status, retry = 500, None
        headers = {"Retry-After": str(int(retry))} if retry else None
        return JSONResponse(error_body(status, message), status_code=status, headers=headers)

    return _DialectRoute(path, endpoint, methods, error_body)


class _DialectRoute(Route):
    """A route whose 405 (a method it does not take) is in its dialect's shape too."""

    def __init__(self, path: str, endpoint: Handler, methods: list[str], error_body: ErrorBody):
        super().__init__(path, endpoint, methods=methods)
        self.error_body = error_body

    async def handle(self, scope, receive, send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allow = ", ".join(sorted(self.methods))
            message = f"Method {scope['method']} not allowed on {self.path}; use {allow}."
            body, headers = self.error_body(405, message), {"Allow": allow}
            await JSONResponse(body, status_code=405, headers=headers)(scope, receive, send)
            return
        await super().handle(scope, receive, send)


async def collect_unless_gone(submitted, http: Request) -> tuple[str, Finished] | None:
    """The whole completion of a non-streaming request, or None (and the request cancelled)
    when its client goes away first."""
    return await unless_gone(_collect(submitted), submitted, http)
