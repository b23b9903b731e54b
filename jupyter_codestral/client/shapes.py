"""The typed shapes of what crosses the wire on the Jupyter side: a request's parameters
(`Sampling`, spelled per protocol at the wire), a stream's pieces (`Piece`) and their usage
(`Usage`, one shape whichever server answered). protocol.py reads and writes them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict

from codestral_engine import RequestUsage

from ..errors import CodestralError


@dataclass(frozen=True)
class Sampling:
    """A request's parameters, typed from the magic's options and the lab's request to the
    wire, where each protocol spells them (None: the server's default, not sent)."""

    max_tokens: int | None = None
    min_tokens: int | None = None  # our engine's and vLLM's extension
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    random_seed: int | None = None
    priority: str | None = None  # our engine's: "interactive" (ghost text) or "batch"
    session_key: str | None = None  # our engine's: a newer request of the session supersedes

    def replace(self, **changes: Any) -> Sampling:
        return dataclasses.replace(self, **changes)

    def mistral(self) -> dict[str, Any]:
        """Under Mistral's names (our engine's too), without the unset ones."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def openai(self) -> dict[str, Any]:
        """Under OpenAI's (and vLLM's) names."""
        fields = self.mistral()
        if "random_seed" in fields:
            fields["seed"] = fields.pop("random_seed")
        return fields


def sampling(params: dict[str, Any]) -> Sampling:
    """`Sampling` from keyword arguments; an unknown name is a `CodestralError`."""
    try:
        return Sampling(**params)
    except TypeError:
        known = {f.name for f in dataclasses.fields(Sampling)}
        raise CodestralError(
            f"Unknown request parameter(s): {', '.join(sorted(set(params) - known))}.",
            kind="bad_request",
            fix=f"Use: {', '.join(sorted(known))}.",
        ) from None


class Usage(RequestUsage):
    """The one shape of usage on the Jupyter side: the engine's `RequestUsage` counts, read
    from Mistral's shape (our engine's adds its cache and timings) or OpenAI's (vLLM) by
    `usage`, written back in Mistral's by `mistral`."""

    model_config = ConfigDict(frozen=True)
    peak_memory_bytes: int | None = None  # our engine's

    def mistral(self) -> dict[str, Any]:
        """Mistral's usage object (the shape the SDKs read), with the prompt cache and the
        timings where they were reported."""
        body: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_prompt_tokens is not None:
            body["prompt_tokens_details"] = {"cached_tokens": self.cached_prompt_tokens}
        timings = {
            "time_to_first_token_s": self.time_to_first_token_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
        }
        if any(value is not None for value in timings.values()):
            body["timings"] = timings
        return body


def usage(raw: Any) -> Usage | None:
    """The `Usage` of a response's or chunk's `usage` object, in Mistral's nested shape
    (`prompt_tokens_details.cached_tokens`, `timings`) or OpenAI's flat one; None for none."""
    if not isinstance(raw, dict) or not raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    timings = raw.get("timings") or {}
    fields = {
        "prompt_tokens": raw.get("prompt_tokens") or 0,
        "completion_tokens": raw.get("completion_tokens") or 0,
        "cached_prompt_tokens": details.get("cached_tokens", raw.get("cached_prompt_tokens")),
        "draft_tokens": raw.get("draft_tokens"),
        "accepted_draft_tokens": raw.get("accepted_draft_tokens"),
        "time_to_first_token_s": timings.get("time_to_first_token_s"),
        "decode_tokens_per_s": timings.get("decode_tokens_per_s"),
        "peak_memory_bytes": timings.get("peak_memory_bytes"),
    }
    flat = {k: raw[k] for k in ("time_to_first_token_s", "decode_tokens_per_s") if k in raw}
    return Usage.model_validate(fields | flat)


@dataclass
class Piece:
    """What one chunk (FIM or chat, streamed) carries for a reader."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


def piece(chunk: dict[str, Any]) -> Piece:
    """The text, finish reason and usage of a chunk: Mistral's and OpenAI's chat and FIM
    chunks carry text in `delta.content`, OpenAI completions in `text`; a chunk without
    choices may carry usage (vLLM sends it last, after the finish reason)."""
    choices = chunk.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    finish = choice.get("finish_reason")
    return Piece(
        text=text, finish_reason=FINISH_REASONS.get(finish, finish), usage=usage(chunk.get("usage"))
    )


# OpenAI-compatible servers' finish reasons that Mistral's API spells otherwise.
FINISH_REASONS = {"abort": "error"}
