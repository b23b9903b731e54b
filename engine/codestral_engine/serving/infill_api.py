"""llama.cpp's `/infill` on the engine, for llama.vim, llama.vscode and minuet, plus `/props`
as they read it (`/health` is the server's own).

Reference: llama.cpp tools/server (README's /infill; `format_prompt_infill` and the slot's
stop rules in server.cpp). The prompt, token ids:

    <s> E [SUFFIX] input_suffix [PREFIX] input_prefix + prompt

where the FIM part is exactly `encode_fim(input_prefix + prompt, input_suffix)` and E is
`input_extra` as llama.cpp lays it out for a model without repo-level FIM tokens (Codestral has
none): each chunk's text after "\\n\\n--- snippet ---\\n\\n", placed before the FIM part, the
oldest tokens dropped when the window is short. Being first, the chunks stay a cacheable prefix:
a warm-up (`n_predict: 0`, prefill only) with the ring buffer's chunks puts them in the prompt
cache and the next completion reuses them whatever its prefix and suffix (`tokens_cached`).

- `prompt` is the text typed on the cursor's line; n_predict -1 means no limit.
- t_max_predict_ms: once a line break has been generated, stop when generation (from the first
  token) has taken longer. n_indent: a generated line indented less than this ends the
  completion, cut where its text starts (llama.cpp's rule).
- Sampling: temperature (default 0, greedy: the same ghost text keystroke after keystroke),
  top_p, seed, stop; llama.cpp's other samplers (top_k, samplers, ...) have no effect.
  cache_prompt: the engine always reuses exact cached prefixes (the output does not change).
- `response_fields` keeps only the listed fields, nested ones as "timings/prompt_n" keys.
- `stream: true`: Server-Sent Events as llama.cpp sends them (`data: {"content": ..., "stop":
  false}`, then the whole reply's fields with "stop": true); with n_indent, a new line is sent
  once its indentation is known, so a line the rule cuts is never half sent.
- Errors: llama.cpp's {"error": {"code", "message", "type"}}, with the Mistral routes' statuses.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.engine import Engine
from ..core.events import Finished
from ..errors import EngineError
from .dialect import dialect_route
from .http_input import parse
from .server import (
    APIError,
    ServerState,
    _active,
    _log,
    _submit,
    track_running,
    unless_gone,
)

_Done = tuple[str, Finished, bool]  # the text, the final event, whether a stop rule cut it
SNIPPET = "\n\n--- snippet ---\n\n"  # llama.cpp's chunk separator without repo-level tokens
ERROR_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    413: "exceed_context_size_error",
    429: "unavailable_error",
    500: "server_error",
    503: "unavailable_error",
}


class _Chunk(BaseModel):
    model_config = ConfigDict(extra="ignore")  # llama.vim's "time", ...

    text: StrictStr = ""
    filename: StrictStr = "tmp"


class InfillBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # id_slot, top_k, samplers, t_max_prompt_ms, ...

    input_prefix: StrictStr = ""
    input_suffix: StrictStr = ""
    input_extra: list[_Chunk] = []
    prompt: StrictStr = ""
    n_predict: StrictInt = -1
    temperature: StrictFloat | StrictInt | None = None
    top_p: StrictFloat | StrictInt | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    cache_prompt: StrictBool = True
    t_max_predict_ms: StrictInt | StrictFloat | None = None
    n_indent: StrictInt = 0
    response_fields: list[StrictStr] | None = None


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "invalid_request_error")
    return {"error": {"code": status, "message": message, "type": kind}}


def routes(state: ServerState) -> list[Route]:
    """/infill and /props on `state`'s engine."""

    async def infill(request: Request) -> Response:
        body = await parse(request, InfillBody, mistral_fields=False)
        if body.n_predict < -1:
            raise APIError(422, f"n_predict must be >= -1 (-1: no limit), got {body.n_predict}.")
        engine = state.ready_engine()
        # A warm-up (n_predict 0) prefills: one token is the prefill's own last step.
        limit = 1 if body.n_predict == 0 else (None if body.n_predict < 0 else body.n_predict)
        options = {"max_tokens": limit, "temperature": body.temperature, "top_p": body.top_p,
                   "random_seed": body.seed, "stop": body.stop or None}  # fmt: skip

        def submit():  # on the tokenizing thread, off the event loop
            ids = _prompt_ids(engine, body)
            if state.log_prompts:
                extra = len(ids) - _fim_length(engine, body)
                _log(
                    {
                        "event": "infill_prompt",
                        "prompt": body.input_prefix + body.prompt,
                        "suffix": body.input_suffix,
                        "extra_tokens": extra,
                    }
                )
            return engine.submit(ids, **options)

        async def answer() -> Response:
            submitted = await _submit(state, submit)
            if body.stream:  # sse-starlette stops the generator (and the request) on disconnect
                responding = _streamed(body, submitted, engine)
            else:
                responding = _complete(body, submitted, request, engine)
            return await track_running(state, submitted, responding)

        return await _active(state, answer())

    async def props(_request: Request) -> Response:
        engine = state.engine
        return JSONResponse(
            {
                "default_generation_settings": {
                    "n_ctx": engine.context_length if engine else None,
                    "params": {"n_predict": -1, "temperature": 0.0, "top_p": 1.0, "n_indent": 0},
                },
                "total_slots": 1,
                "model_path": str(state.model_path),
                "modalities": {"vision": False, "audio": False},
                "build_info": "codestral-engine",
            }
        )

    return [
        dialect_route("/infill", infill, ["POST"], error_body),
        dialect_route("/props", props, ["GET"], error_body),
    ]


def _prompt_ids(engine: Engine, body: InfillBody) -> list[int]:
    tokenizer, window = engine.tokenizer, engine.context_length
    limit = window * tokenizer.max_token_chars  # no prompt longer than this can fit
    if len(body.input_prefix) + len(body.prompt) + len(body.input_suffix) > limit:
        raise APIError(
            413,
            f"The prefix and suffix cannot fit the model's context window of "
            f"{window} tokens; shorten them.",
        )
    fim = tokenizer.encode_fim(body.input_prefix + body.prompt, body.input_suffix)
    extra_text = "".join(SNIPPET + chunk.text for chunk in body.input_extra)[-limit:]
    extra = tokenizer.encode(extra_text) if extra_text else []
    room = window - len(fim) - max(body.n_predict, 1)
    extra = extra[len(extra) - room :] if 0 < room < len(extra) else extra if room > 0 else []
    return fim[:1] + extra + fim[1:]


def _fim_length(engine: Engine, body: InfillBody) -> int:
    return len(engine.tokenizer.encode_fim(body.input_prefix + body.prompt, body.input_suffix))


async def _streamed(body: InfillBody, submitted, engine: Engine) -> Response:
    return EventSourceResponse(_stream(body, submitted, engine), ping=10)


async def _complete(body: InfillBody, submitted, http: Request, engine: Engine) -> Response:
    ran = await unless_gone(_run(body, submitted), submitted, http)
    if ran is None:
        return Response(status_code=499)  # nobody reads it
    text, final, cut = ran
    reply = _reply(body, text, final, cut, engine)
    if body.response_fields is not None:
        reply = {
            path: value
            for path in body.response_fields
            if (value := _nested(reply, path)) is not _MISSING
        }
    return JSONResponse(reply)


async def _run(body: InfillBody, submitted) -> tuple[str, Finished, bool]:
    """The whole completion: (text, final event, whether a stop rule cut it)."""
    async for _delta, done in _follow(body, submitted):
        if done is not None:
            return done
    raise APIError(500, "The request ended without a final event.")


async def _follow(body: InfillBody, submitted) -> AsyncIterator[tuple[str, _Done | None]]:
    """Generate, applying llama.cpp's t_max_predict_ms and n_indent rules as tokens come.

    Yields text as it becomes final (with n_indent, a new line waits until its indentation is
    known), then ("", (text, final event, cut))."""
    text, sent, first_at, cut = "", 0, None, False
    try:
        async for event in submitted.events():
            if isinstance(event, Finished):
                if len(text) > sent:
                    yield text[sent:], None
                yield "", (text, event, cut)
                return
            if body.n_predict == 0 or cut:
                continue  # a warm-up keeps no text; a cut one only waits for its end
            if first_at is None:
                first_at = time.perf_counter()
            text += event.text
            newline = text.rfind("\n")
            line = text[newline + 1 :]
            indent = len(line) - len(line.lstrip(" \t"))
            if newline >= 0:
                elapsed_ms = (time.perf_counter() - first_at) * 1e3
                late = bool(body.t_max_predict_ms) and elapsed_ms > body.t_max_predict_ms
                if body.n_indent > 0 and indent < len(line) and indent < body.n_indent:
                    text, cut = text[: newline + 1 + indent], True
                if cut or late:
                    cut = True
                    submitted.cancel()  # within one decode step; its Finished event follows
            undecided = body.n_indent > 0 and not cut and newline >= 0 and indent == len(line)
            ready = newline + 1 if undecided else len(text)
            if ready > sent:
                yield text[sent:ready], None
                sent = ready
    except EngineError as exc:
        raise APIError(500, str(exc)) from exc


async def _stream(body: InfillBody, submitted, engine: Engine) -> AsyncIterator[dict[str, str]]:
    try:
        async for delta, done in _follow(body, submitted):
            if done is None:
                chunk = {"index": 0, "content": delta, "tokens": [], "stop": False, "id_slot": 0}
            else:
                chunk = _reply(body, *done, engine) | {"content": ""}
            yield {"data": json.dumps(chunk)}
    except APIError as exc:
        yield {"data": json.dumps(error_body(exc.status, str(exc)))}


def _reply(body: InfillBody, text: str, final: Finished, cut: bool, engine: Engine) -> dict:
    usage = final.usage
    prompt_ms = (usage.time_to_first_token_s or 0.0) * 1e3
    predicted = 0 if body.n_predict == 0 else usage.completion_tokens
    rate = usage.decode_tokens_per_s or 0.0
    predicted_ms = predicted / rate * 1e3 if rate else 0.0
    prompt_n = usage.prompt_tokens - usage.cached_prompt_tokens
    stop_type = "limit" if cut or final.finish_reason != "stop" else "eos"
    return {
        "index": 0,
        "content": text,
        "tokens": [],
        "id_slot": 0,
        "stop": True,
        "model": engine.model_path.name,
        "tokens_predicted": predicted,
        "tokens_evaluated": usage.prompt_tokens,
        "tokens_cached": usage.cached_prompt_tokens,
        "truncated": False,
        "has_new_line": "\n" in text,
        "stop_type": stop_type,
        "stopping_word": "",
        "timings": {
            "cache_n": usage.cached_prompt_tokens,
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": prompt_n / prompt_ms * 1e3 if prompt_ms else 0.0,
            "predicted_n": predicted,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted if predicted else 0.0,
            "predicted_per_second": rate,
        },
    }


_MISSING = object()


def _nested(reply: dict, path: str) -> Any:
    value: Any = reply
    for key in path.split("/"):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value
