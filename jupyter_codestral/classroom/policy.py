"""The course's policy per student, from JupyterHub groups: members of `codestral-off` get
nothing, members of `codestral-hints` get the hints mode (one-line completions, chat answers
that explain instead of writing code), everyone else the full assistant.

Membership is read from the hub's REST API with the service's own token (scopes
`read:groups!group=...`, see `hub_config`) and asked again at most every `GROUP_TTL_S` seconds,
so a teacher's change reaches the next request within that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from ..client.shapes import Sampling
from ..context.teaching import HINTS_CHAT_MAX_TOKENS, HINTS_MAX_TOKENS, HINTS_SYSTEM
from ..errors import CodestralError

OFF_GROUP = "codestral-off"
HINTS_GROUP = "codestral-hints"
GROUP_TTL_S = 10.0  # the bound is 15 s from the teacher's click to the refusal
MODES = ("on", "hints", "off")

log = logging.getLogger(__name__)


class Groups:
    """Members of the policy groups, cached for `ttl` seconds, one refresh at a time."""

    def __init__(self, api_url: str, token: str, ttl: float = GROUP_TTL_S):
        self.ttl = ttl
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/") + "/",
            headers={"Authorization": f"token {token}"},
            timeout=10.0,
        )
        self._members: dict[str, set[str]] | None = None
        self._fetched_at = 0.0
        self._refresh: asyncio.Task | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def mode(self, user: str) -> str:
        """'off', 'hints' or 'on' for `user` (off wins when in both groups)."""
        members = await self._current()
        if user in members[OFF_GROUP]:
            return "off"
        return "hints" if user in members[HINTS_GROUP] else "on"

    async def _current(self) -> dict[str, set[str]]:
        if self._members is not None and time.monotonic() - self._fetched_at < self.ttl:
            return self._members
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch())
        try:
            members = await asyncio.shield(self._refresh)
        except (CodestralError, httpx.HTTPError) as exc:
            if self._members is None:  # never known: refuse rather than guess
                raise CodestralError(
                    f"The classroom service cannot read the course's groups: {exc}",
                    503,
                    kind="unreachable",
                    fix="Tell your teacher.",
                ) from exc
            log.warning("codestral: group lookup failed, using the last known: %s", exc)
            return self._members
        self._members, self._fetched_at = members, time.monotonic()
        return members

    async def _fetch(self) -> dict[str, set[str]]:
        members = {}
        for group in (OFF_GROUP, HINTS_GROUP):
            response = await self._http.get(f"groups/{group}")
            if response.status_code == 404:  # deleted by an admin: nobody is in it
                members[group] = set()
                continue
            if response.status_code != 200:
                raise CodestralError(f"the hub answered {response.status_code} for {group}")
            members[group] = set(response.json().get("users") or [])
        return members


def fim_params(mode: str, params: Sampling) -> Sampling:
    """FIM parameters in `mode`: hints stop at the end of the line, after a few tokens."""
    if mode != "hints":
        return params
    stop = params.stop or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    limit = min(params.max_tokens or HINTS_MAX_TOKENS, HINTS_MAX_TOKENS)
    return params.replace(max_tokens=limit, stop=[*stop, "\n"])


def chat_request(
    mode: str, messages: list[dict[str, Any]], params: Sampling
) -> tuple[list[dict[str, Any]], Sampling]:
    """Chat messages and parameters in `mode`: hints explain, briefly, without code."""
    if mode != "hints":
        return messages, params
    limit = min(params.max_tokens or HINTS_CHAT_MAX_TOKENS, HINTS_CHAT_MAX_TOKENS)
    first = messages[0] if messages else {}
    if first.get("role") == "system":  # the template takes one system prompt: extend it
        system = {"role": "system", "content": f"{HINTS_SYSTEM}\n\n{first.get('content', '')}"}
        messages = [system, *messages[1:]]
    else:
        messages = [{"role": "system", "content": HINTS_SYSTEM}, *messages]
    return messages, params.replace(max_tokens=limit)


def turned_off() -> CodestralError:
    """What a student in the off group is told (the lab and the magic show the message)."""
    return CodestralError(
        "Codestral is turned off by your course right now (an exam, or your teacher's choice).",
        403,
        kind="disabled",
        fix="Ask your teacher if you think this is a mistake.",
    )
