"""The whole HTTP app of `serve`: Mistral's API (server.py) plus the dialects other tools speak
on the same engine, Ollama's (ollama_api.py) and llama.cpp's `/infill` (infill_api.py).

Every dialect route needs the engine's token as `Authorization: Bearer`, like the Mistral
routes; a refusal comes in the dialect's own error shape. Many Ollama clients cannot send a
token, so `serve --ollama-no-auth` lets token-less requests reach the Ollama routes only, and
only from this machine: the peer is loopback, the Host header names loopback (a web page that
rebinds its DNS name to 127.0.0.1 is refused) and a browser's Origin, if any, is loopback (a
page elsewhere cannot drive the engine). serve refuses the flag with a non-loopback --host.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.responses import JSONResponse

from . import infill_api, ollama_api
from .dialect import ErrorBody
from .server import ServerState
from .server import create_app as create_mistral_app


def create_app(
    state: ServerState, *, ollama_no_auth: bool = False, idle_timeout: float | None = None
) -> Starlette:
    """Mistral's routes, then Ollama's and llama.cpp's on the same state and engine."""
    app = create_mistral_app(state)
    dialects = [(ollama_api, ollama_api.routes(state, idle_timeout)),
                (infill_api, infill_api.routes(state))]  # fmt: skip
    paths: dict[str, ErrorBody] = {}
    for module, routes in dialects:
        app.router.routes.extend(routes)
        paths |= {route.path: module.error_body for route in routes}
    app.add_middleware(
        _DialectAuth,
        token=state.token,
        paths=paths,
        open_paths=set(ollama_api.PATHS) if ollama_no_auth else set(),
    )
    return app


class _DialectAuth:
    """The token check for the dialect routes (pure ASGI: streams pass through untouched)."""

    def __init__(self, app, token: str, paths: dict[str, ErrorBody], open_paths: set[str]):
        self.app = app
        self.expected = token.encode()
        self.paths, self.open_paths = paths, open_paths

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if not (scheme.lower() == b"bearer" and hmac.compare_digest(given, self.expected)):
            if path not in self.open_paths or not _from_this_machine(scope, headers):
                body = self.paths[path](401, _refusal(path in self.open_paths))
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
            # Allowed without a token: the token check inside (server.py) sees the token.
            kept = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
            scope = {**scope, "headers": [*kept, (b"authorization", b"Bearer " + self.expected)]}
        await self.app(scope, receive, send)


def _refusal(open_path: bool) -> str:
    if open_path:
        return (
            "Token-less requests are accepted only from this machine, with a loopback Host "
            "and no foreign Origin; send 'Authorization: Bearer <token>' otherwise."
        )
    return (
        "Missing or wrong API token. Send 'Authorization: Bearer <token>' with the token from "
        "the engine's connection file; for an Ollama client that cannot send one, start the "
        "engine with `codestral-engine serve --ollama-no-auth` (loopback only)."
    )


def _from_this_machine(scope, headers: dict[bytes, bytes]) -> bool:
    client = scope.get("client")
    if not client or not _is_loopback(client[0]):
        return False
    host = headers.get(b"host", b"").decode("latin-1")
    if not _is_loopback(urlsplit(f"//{host}").hostname or ""):
        return False
    origin = headers.get(b"origin")
    return origin is None or _is_loopback(urlsplit(origin.decode("latin-1")).hostname or "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
