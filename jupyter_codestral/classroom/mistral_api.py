"""Mistral's API as the classroom service speaks it to students: request bodies (what the
official SDK and this project's client send), and the replies rebuilt from the upstream's
chunks as read by `shapes.piece` (Mistral's or OpenAI's shape, whichever the upstream
speaks), so students always get Mistral's shape.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ..client.shapes import Sampling, Usage
from ..errors import CodestralError

MAX_TOKENS = 4096  # most a student may ask for in one request


class _Body(BaseModel):
    # The SDKs send fields the upstream has no use for (metadata, prompt_cache_key, ...).
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    max_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS)
    min_tokens: StrictInt | None = Field(None, ge=0)
    stop: StrictStr | list[StrictStr] | None = None
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(None, gt=0, le=1)
    random_seed: StrictInt | None = None
    stream: StrictBool = False

    def params(self) -> Sampling:
        """The sampling parameters, for the client core (None: the upstream's default)."""
        return Sampling(
            max_tokens=self.max_tokens,
            min_tokens=self.min_tokens,
            stop=self.stop,
            temperature=self.temperature,
            top_p=self.top_p,
            random_seed=self.random_seed,
        )


class FIMBody(_Body):
    prompt: StrictStr
    suffix: StrictStr = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr = Field(pattern="^(system|user|assistant)$")
    content: StrictStr


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)


def parse(model: type[_Body], raw: bytes) -> Any:
    """The body as `model`, or a 422 naming the first wrong field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise CodestralError(
            f"Invalid field '{where}': {error['msg']}.", 422, kind="bad_request"
        ) from exc


def error_json(error: CodestralError) -> dict[str, Any]:
    """Mistral's error shape (`message` is what clients show), with the fix."""
    status = error.status or 500
    return {
        "object": "error",
        "message": error.message,
        "type": error.kind,
        "param": None,
        "code": str(status),
        "fix": error.fix,
    }


class Reply:
    """One completion's identity and its chunks (streamed) or whole answer."""

    def __init__(self, model: str):
        self.id = uuid.uuid4().hex
        self.model = model
        self.created = int(time.time())

    def chunk(self, text: str, finish: str | None = None, usage: Usage | None = None) -> dict:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = usage.mistral()
        return body

    def whole(self, text: str, finish: str | None, usage: Usage | None) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "tool_calls": None},
                    "finish_reason": finish or "stop",
                }
            ],
            "usage": (usage or Usage()).mistral(),
        }


def models_json(model: str) -> dict[str, Any]:
    """The one model a course serves, as Mistral's model card (the SDK requires `type`)."""
    card = {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "codestral-classroom",
        "name": model,
        "capabilities": {"completion_chat": True, "completion_fim": True},
        "type": "base",
    }
    return {"object": "list", "data": [card]}
