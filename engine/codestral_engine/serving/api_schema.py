"""Mistral's HTTP API, as bodies in and JSON out: field for field what the official SDK sends
and parses (`FIMCompletionRequest`, `ChatCompletionRequest`, `CompletionChunk`, `UsageInfo`).

`max_completion_tokens` (OpenAI's name) is taken as `max_tokens`. Extras: `session_key` (a
new request with the same key cancels the previous one, the keystroke case) and `priority`;
usage adds `prompt_tokens_details.cached_tokens`, the field OpenAI-style clients know, plus the
engine's timings under `timings`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from ..core.events import Finished, Usage


class _Body(BaseModel):
    # The SDKs send fields this engine has no use for (metadata, prompt_cache_key, ...).
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    max_tokens: StrictInt | None = None
    min_tokens: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    temperature: StrictFloat | StrictInt | None = None
    top_p: StrictFloat | StrictInt | None = None
    random_seed: StrictInt | None = None
    stream: StrictBool = False
    session_key: StrictStr | None = None
    priority: Literal["interactive", "batch"] | None = None
    max_completion_tokens: StrictInt | None = None  # OpenAI's newer name for max_tokens

    @model_validator(mode="after")
    def _one_max_tokens(self) -> _Body:
        given = {self.max_tokens, self.max_completion_tokens} - {None}
        if len(given) > 1:
            raise ValueError(
                "max_tokens and max_completion_tokens differ; they are one limit, send one"
            )
        self.max_tokens = given.pop() if given else None
        return self

    def engine_options(self) -> dict[str, Any]:
        options = {
            name: getattr(self, name)
            for name in ("max_tokens", "min_tokens", "stop", "temperature", "top_p", "random_seed")
        }
        options["session"] = self.session_key
        if self.priority is not None:
            options["priority"] = self.priority
        return options


# Fields of Mistral's and OpenAI's APIs this engine does not implement, with the values that
# ask for nothing (accepted as sent); any other value is refused with a 422 naming the field
# rather than answered as if honoured. The engine serves one user and one sequence at a time
# (so `n` stays 1) and its sampler has temperature, top-p and a seed, no penalties.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "safe_prompt": (None, False),
}


def unsupported(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A 422's detail for each field of `data` that asks for what the engine does not do."""
    return [
        {
            "loc": ["body", name],
            "msg": "not implemented by this engine; leave it out (or send "
            f"{' or '.join(json.dumps(v) for v in accepted)})",
            "type": "unsupported",
        }
        for name, accepted in UNSUPPORTED.items()
        if name in data and not any(_same(data[name], v) for v in accepted)
    ]


def _same(value: Any, accepted: Any) -> bool:
    # 0 == False in Python: compare JSON types too, so `"n": true` is not taken for 1.
    return value == accepted and isinstance(value, bool) == isinstance(accepted, bool)


class FIMBody(_Body):
    prompt: StrictStr
    suffix: StrictStr | None = None


class ChatBody(_Body):
    messages: list[dict[str, Any]]


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        # Speculative decoding: drafted from the prompt, and kept by the model.
        "draft_tokens": usage.draft_tokens,
        "accepted_draft_tokens": usage.accepted_draft_tokens,
        "timings": {
            "time_to_first_token_s": usage.time_to_first_token_s,
            "decode_tokens_per_s": usage.decode_tokens_per_s,
            "peak_memory_bytes": usage.peak_memory_bytes,
        },
    }


class ResponseShape:
    """One response's identity and JSON shapes (whole, or chunk by chunk)."""

    def __init__(self, model: str):
        self.id = uuid.uuid4().hex
        self.model = model
        self.created = int(time.time())

    def chunk(self, content: str | None, finish: Finished | None = None) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant"} if content is None else {"content": content}
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish.finish_reason if finish else None,
                }
            ],
        }
        if finish is not None:
            body["usage"] = usage_json(finish.usage)
        return body

    def whole(self, text: str, finish: Finished) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "tool_calls": None},
                    "finish_reason": finish.finish_reason,
                }
            ],
            "usage": usage_json(finish.usage),
        }


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    422: "invalid_request_error",
    405: "invalid_request_error",
    413: "context_length_exceeded",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}


def error_json(
    status: int, message: str, param: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """Mistral's error shape; `kind` names the error's type where the status's is too broad."""
    return {
        "object": "error",
        "message": message,
        "type": kind or ERROR_TYPES.get(status, "invalid_request_error"),
        "param": param,
        "code": str(status),
    }


def validation_json(detail: list[dict[str, Any]]) -> dict[str, Any]:
    """A 422: Mistral's `HTTPValidationError` (`detail`: loc, msg, type per problem), plus
    the error shape's fields with a human message (the SDKs ignore fields they do not know)."""
    problems = []
    for problem in detail:
        where = ".".join(str(p) for p in problem["loc"][1:])
        problems.append(f"Invalid field '{where}': {problem['msg']}." if where else problem["msg"])
    return error_json(422, " ".join(problems)) | {"detail": detail}
