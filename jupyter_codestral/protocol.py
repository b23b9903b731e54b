"""The wire protocol to a Codestral server, in one place: request bodies, the SSE stream
(chunks, `[DONE]`, errors sent inside the stream) and HTTP failures mapped to `CodestralError`
with the fix. `client.py`'s sync and async faces send and receive through these functions; no
other module parses the stream.

Today's protocol is Mistral's API (`/v1/fim/completions`, `/v1/chat/completions`), spoken by
our `codestral-engine serve` and by Mistral's hosted API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import CodestralError

DEFAULT_MODEL = "codestral-latest"
FIM_PATH = "/v1/fim/completions"
CHAT_PATH = "/v1/chat/completions"
DONE = "[DONE]"


def fim_body(prompt: str, suffix: str, model: str, params: dict[str, Any]) -> dict[str, Any]:
    """A FIM request; parameters left as None are not sent."""
    return _body({"model": model, "prompt": prompt, "suffix": suffix, **params})


def chat_body(messages: list[dict[str, Any]], model: str, params: dict[str, Any]) -> dict:
    return _body({"model": model, "messages": messages, **params})


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def stream_chunk(data: str) -> dict[str, Any] | None:
    """One SSE event's data as a chunk; None at `[DONE]`. An error sent inside the stream
    (after the 200 status) is raised."""
    if data == DONE:
        return None
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise CodestralError(f"Codestral sent a malformed stream event: {data[:200]!r}.") from exc
    if not isinstance(chunk, dict):
        raise CodestralError(f"Codestral sent an unexpected stream event: {data[:200]!r}.")
    if chunk.get("object") == "error":
        message = str(chunk.get("message") or "engine error")
        code = chunk.get("code")
        status = int(code) if str(code).isdigit() else 500  # some servers send names here
        raise CodestralError(message, status, kind="engine_error")
    return chunk


@dataclass
class Piece:
    """What one chunk (FIM or chat, streamed) carries for a reader."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


def piece(chunk: dict[str, Any]) -> Piece:
    """The text, finish reason and usage of a chunk (a chunk without choices may carry usage)."""
    choices = chunk.get("choices") or [{}]
    choice = choices[0]
    finish = choice.get("finish_reason")
    return Piece(
        text=(choice.get("delta") or {}).get("content") or "",
        finish_reason=finish,
        usage=(chunk.get("usage") or {}) if finish else {},
    )


def http_error(response: httpx.Response) -> CodestralError:
    """A non-200 answer as the error a user can act on (read the body first)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("detail") or response.text)
    else:
        message = response.text or response.reason_phrase
    status = response.status_code
    if status == 401:
        return CodestralError(
            f"Codestral refused the API key: {message}",
            401,
            kind="auth",
            fix="Check the api_key setting (or $CODESTRAL_API_KEY for codestral.mistral.ai, "
            "$MISTRAL_API_KEY for api.mistral.ai, each with its own kind of key).",
        )
    if status == 503:
        return CodestralError(message, 503, kind="engine_starting", fix="Wait until the model "
                              "has loaded.")  # fmt: skip
    if status == 429:
        return CodestralError(message, 429, kind="busy", fix="Requests resume when the queue "
                              "drains.")  # fmt: skip
    if status == 413:
        return CodestralError(message, 413, kind="context", fix="Send less context (lower the "
                              "context budget).")  # fmt: skip
    if 400 <= status < 500:
        return CodestralError(f"The server refused the request ({status}): {message}", status,
                              kind="bad_request")  # fmt: skip
    return CodestralError(f"Codestral answered {status}: {message}", status, kind="engine_error")


def unreachable(url: str, exc: Exception) -> CodestralError:
    return CodestralError(
        f"Cannot reach the Codestral engine at {url} ({exc}).",
        kind="unreachable",
        fix="Is it running? Check with `%codestral status` in a notebook or `codestral-engine "
        "serve` in a terminal (it reports a running server), or the url setting.",
    )
