"""What a request's stream carries: text deltas, then one final event with usage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# finish_reason values: Mistral's API values plus "cancelled" for a request stopped by its caller.
FINISH_STOP = "stop"  # end of sequence or a stop string
FINISH_LENGTH = "length"  # max_tokens reached
FINISH_MODEL_LENGTH = "model_length"  # the context window is full
FINISH_CANCELLED = "cancelled"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    cached_prompt_tokens: int  # reused from the prompt cache, not prefilled
    completion_tokens: int
    time_to_first_token_s: float | None  # from submission to the first generated token
    decode_tokens_per_s: float | None  # after the first token
    peak_memory_bytes: int
    draft_tokens: int = 0  # speculative decoding: tokens drafted from the prompt
    accepted_draft_tokens: int = 0  # ... and kept by the model

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextDelta:
    """New text and the generated token ids it came from.

    `text` may be empty (a partial UTF-8 character or a possible stop string is held back), and
    `token_ids` may be empty (held-back text released when the stream ends).
    """

    text: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Finished:
    """The last event of every request."""

    finish_reason: str
    usage: Usage
    prompt_token_ids: tuple[int, ...]
    completion_token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Completion:
    """A whole request's result, for callers that do not stream."""

    text: str
    finish_reason: str
    usage: Usage
    prompt_token_ids: tuple[int, ...]
    completion_token_ids: tuple[int, ...]


Event = TextDelta | Finished
