"""The classroom service's HTTP routes (tornado), under the hub's `/services/codestral/`:

POST v1/fim/completions, v1/chat/completions   Mistral's API, streamed (SSE) or whole
GET  v1/models                                 the one model the class uses
GET  status                                    the student's mode and the course's server
GET  usage                                     use per student and day (JSON; admins: all)
GET  usage.html                                the same as a table, for a teacher's browser

Every route needs a hub identity, checked by JupyterHub's own service-auth classes: a token
(the student's `JUPYTERHUB_API_TOKEN`, sent as `Authorization: Bearer`/`token`) with the
access scope of this service, or (usage.html) the hub's OAuth login. Tornado because
jupyterhub.services.auth's `HubAuthenticated` / `HubOAuthenticated` mixins and the OAuth
callback handler are tornado handlers: no second web framework around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from jupyterhub.services.auth import (
    HubAuth,
    HubAuthenticated,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ..client.engine_client import AsyncEngineClient
from ..client.shapes import Usage
from ..client.status import ClassroomStatus
from ..errors import CodestralError
from . import mistral_api, policy
from .fair_share import Busy, FairShare
from .hub_config import USAGE_SCOPE
from .usage import UsageLog, usage_html

log = logging.getLogger(__name__)


@dataclass
class Classroom:
    """What the routes share: the upstream (through the client core), the course's groups,
    the fair share of the upstream, the usage log."""

    upstream: AsyncEngineClient
    model: str
    groups: policy.Groups
    share: FairShare
    usage: UsageLog
    auth: HubAuth  # tokens only (API routes); usage.html logs in with the hub's OAuth


class _Route(HubAuthenticated, web.RequestHandler):
    """A route for a hub identity with this service's access scope; errors as JSON."""

    @property
    def room(self) -> Classroom:
        return self.settings["classroom"]

    @property
    def hub_auth(self) -> HubAuth:
        return self.room.auth

    @property
    def user(self) -> str:
        return self.current_user["name"]

    async def prepare(self) -> None:
        # The hub is asked without blocking the event loop (tornado's get_current_user would).
        model = await self.hub_auth.get_user(self, sync=False)
        if model is None:
            raise CodestralError(
                "This service needs your JupyterHub API token.",
                401,
                kind="auth",
                fix="Send it as `Authorization: Bearer $JUPYTERHUB_API_TOKEN`.",
            )
        try:
            self._hub_auth_user_cache = self.check_hub_user(model)
        except UserNotAllowed as exc:
            raise CodestralError(
                f"{model['name']} may not use this course's Codestral.",
                403,
                kind="forbidden",
                fix="The token lacks the access:services!service=codestral scope.",
            ) from exc

    def send_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, CodestralError):
            message = exc.log_message if isinstance(exc, web.HTTPError) else None
            exc = CodestralError(message or self._reason, status_code, kind="error")
        if isinstance(exc, Busy):
            self.set_header("Retry-After", str(exc.retry_after))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(mistral_api.error_json(exc)))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, CodestralError):  # an answer, not a crash
            log.info("%s %s: %s %s", self.request.method, self.request.path, value.status, value)
        else:
            super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, CodestralError) and exc.status:
            status_code = exc.status
        super().send_error(status_code, **kwargs)


class ModelsHandler(_Route):
    async def get(self) -> None:
        self.send_json(mistral_api.models_json(self.room.model))


class StatusHandler(_Route):
    async def get(self) -> None:
        self.send_json(
            ClassroomStatus(
                service="the course's Codestral service (JupyterHub)",
                user=self.user,
                mode=await self.room.groups.mode(self.user),
                model=self.room.model,
                upstream_protocol=self.room.upstream.wire.name,
            ).model_dump()
        )


class _Completion(_Route):
    """POST: the student's mode applied, a fair turn at the upstream, the reply streamed back
    in Mistral's shape (or whole), use counted. Closing the connection cancels upstream."""

    body_model: type[mistral_api._Body]
    _task: asyncio.Task | None = None

    def upstream_call(self, body: Any, mode: str) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    async def post(self) -> None:
        body = mistral_api.parse(self.body_model, self.request.body)
        if body.model != self.room.model:
            raise CodestralError(
                f"This course serves {self.room.model!r}, not {body.model!r}.",
                404,
                kind="unknown_model",
                fix=f"Set remote_model to {self.room.model!r}.",
            )
        # One task from here on: the student leaving cancels it, waiting or answering.
        self._task = asyncio.ensure_future(self._serve(body))
        with contextlib.suppress(asyncio.CancelledError, StreamClosedError):
            await self._task

    def on_connection_close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _serve(self, body: Any) -> None:
        mode = await self.room.groups.mode(self.user)
        if mode == "off":
            self.room.usage.add(self.user, refusals=1)
            raise policy.turned_off()
        try:
            async with self.room.share.turn(self.user):
                await self._answer(body, mode)
        except Busy:
            self.room.usage.add(self.user, refusals=1)
            raise

    async def _answer(self, body: Any, mode: str) -> None:
        reply = mistral_api.Reply(self.room.model)
        text, finish, usage = [], None, None
        started = False
        try:
            stream = self.upstream_call(body, mode)
            async with contextlib.aclosing(stream) as chunks:
                async for piece in chunks:
                    finish, usage = piece.finish_reason or finish, piece.usage or usage
                    if not piece.text:
                        continue
                    if body.stream:
                        started = started or self._start_sse()
                        await self._event(reply.chunk(piece.text))
                    else:
                        text.append(piece.text)
        except CodestralError as exc:
            error = _for_students(exc)
            if not started:
                raise error from exc
            await self._event(mistral_api.error_json(error))  # the status line is sent
            self.finish()
            return
        finally:
            self._count(usage)
        if not body.stream:
            return self.send_json(reply.whole("".join(text), finish, usage))
        if not started:
            self._start_sse()
        await self._event(reply.chunk("", finish or "stop", usage))
        self.write("data: [DONE]\n\n")
        self.finish()

    def _start_sse(self) -> bool:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        return True

    async def _event(self, data: dict[str, Any]) -> None:
        self.write(f"data: {json.dumps(data)}\n\n")
        await self.flush()

    def _count(self, usage: Usage | None) -> None:
        usage = usage or Usage()
        self.room.usage.add(
            self.user,
            requests=1,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )


class FIMHandler(_Completion):
    body_model = mistral_api.FIMBody

    def upstream_call(self, body: mistral_api.FIMBody, mode: str):
        params = policy.fim_params(mode, body.params())
        return self.room.upstream.fim(body.prompt, body.suffix, self.room.model, params)


class ChatHandler(_Completion):
    body_model = mistral_api.ChatBody

    def upstream_call(self, body: mistral_api.ChatBody, mode: str):
        messages = [m.model_dump() for m in body.messages]
        messages, params = policy.chat_request(mode, messages, body.params())
        return self.room.upstream.chat(messages, self.room.model, params)


class UsageHandler(_Route):
    """Use per student and day: everyone's (or `?user=NAME`'s) for holders of the usage scope
    (hub admins), a student's own for a student, who may ask for no one else's."""

    async def get(self) -> None:
        self.send_json({"user": self.user, "rows": _visible_rows(self)})


class UsagePageHandler(HubOAuthenticated, web.RequestHandler):
    """The same rows as a table, for a teacher's browser (the hub's OAuth login, with the
    process's one `HubOAuth`, as the callback handler uses); students are refused."""

    @web.authenticated
    async def get(self) -> None:
        if not _teacher(self):
            raise web.HTTPError(403, "The usage table is for the course's teachers.")
        self.finish(usage_html(_visible_rows(self)))


def _visible_rows(handler: Any) -> list[dict[str, Any]]:
    user = handler.current_user
    room: Classroom = handler.settings["classroom"]
    teacher = _teacher(handler)
    asked = handler.get_query_argument("user", None)
    if not teacher and asked not in (None, user["name"]):
        raise CodestralError(
            f"{user['name']} may read only their own use.",
            403,
            kind="forbidden",
            fix="Hub admins and the codestral-teachers group read everyone's.",
        )
    return room.usage.rows(asked if teacher else user["name"])


def _teacher(handler: Any) -> bool:
    """A hub admin, or a holder of the usage scope (the codestral-teachers group's role)."""
    user = handler.current_user
    return bool(user.get("admin") or handler.hub_auth.check_scopes(USAGE_SCOPE, user))


def _for_students(error: CodestralError) -> CodestralError:
    """An upstream failure as a student can act on it: nothing of the class key or `serve`."""
    if error.kind in ("unreachable", "auth") or (error.status or 500) >= 500:
        status = 503 if error.kind == "engine_starting" else 502
        return CodestralError(
            "The course's Codestral server is unreachable or failing: tell your teacher "
            f"({error.message})",
            status,
            kind="unreachable",
            fix="Tell your teacher.",
        )
    return error


def make_app(room: Classroom, prefix: str) -> web.Application:
    """The service's routes under `prefix` (the hub's /services/codestral/)."""
    routes = [
        ("v1/models", ModelsHandler),
        ("v1/fim/completions", FIMHandler),
        ("v1/chat/completions", ChatHandler),
        ("status", StatusHandler),
        ("usage", UsageHandler),
        ("usage.html", UsagePageHandler),
        ("oauth_callback", HubOAuthCallbackHandler),
    ]
    return web.Application(
        [(url_path_join(prefix, path), handler) for path, handler in routes],
        classroom=room,
        cookie_secret=secrets.token_bytes(32),  # signs the OAuth state and login cookies
    )
