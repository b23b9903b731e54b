"""Generation parameters with the meaning Mistral's FIM and chat APIs give them.

`GenerationParams.from_options` is the one place options are checked, so the CLI, the HTTP
server and the magic all reject the same bad input with the same message.

Sampling rules, which every backend follows (`sampling_distribution` states them in numpy;
tests/test_sampling.py checks each backend's sampler against it):
1. Until `min_tokens` tokens exist, end of sequence cannot be drawn.
2. temperature 0 takes the most likely token (greedy).
3. Otherwise probabilities are softmax(logits / temperature); with top_p < 1 only the nucleus
   is kept: a token stays when the tokens more likely than it hold less than top_p of the
   mass. The kept tokens are renormalised.
4. Each request draws from its own random stream (seeded by random_seed), so a request that
   runs in between never shifts a seeded request's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import InvalidRequestError

# Codestral's model card recommends a low temperature for code; greedy decoding also makes
# ghost text stable from one keystroke to the next.
DEFAULT_TEMPERATURE = 0.0
MAX_STOP_STRINGS = 16


GREEDY_BELOW = 1e-3
MAX_SEED = 2**63 - 1  # what every backend's generator takes


@dataclass(frozen=True)
class GenerationParams:
    """Validated options for one request.

    - max_tokens: most tokens to generate; None means until end of sequence or context.
    - min_tokens: end of sequence and stop strings are ignored until this many tokens exist
      (the rule vLLM applies too).
    - stop: strings that end generation; the matched text is not part of the output.
    - temperature: 0 is greedy; higher samples more freely (below 1e-3 it samples greedily,
      the limit it tends to, instead of overflowing).
    - top_p: nucleus sampling mass, in (0, 1].
    - random_seed: makes sampling reproducible.
    """

    max_tokens: int | None = None
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    random_seed: int | None = None

    @classmethod
    def from_options(cls, **options: Any) -> GenerationParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidRequestError(
                f"Unknown option(s): {', '.join(unknown)}. "
                f"Valid options: {', '.join(sorted(known))}."
            )
        values = {k: v for k, v in options.items() if v is not None}
        temperature = values.get("temperature")
        if isinstance(temperature, float) and 0 < temperature < GREEDY_BELOW:
            values["temperature"] = 0.0  # the limit; dividing by 1e-320 would overflow
        if "stop" in values:
            values["stop"] = _stop_strings(values["stop"])
        params = cls(**values)
        params._check()
        return params

    def _check(self) -> None:
        if self.max_tokens is not None:
            _require_int("max_tokens", self.max_tokens, minimum=1)
        _require_int("min_tokens", self.min_tokens, minimum=0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise InvalidRequestError(
                f"min_tokens ({self.min_tokens}) is larger than max_tokens ({self.max_tokens}); "
                "lower min_tokens or raise max_tokens."
            )
        _require_number("temperature", self.temperature, 0.0, 2.0, low_open=False)
        _require_number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.random_seed is not None:
            _require_int("random_seed", self.random_seed, minimum=0)
            if self.random_seed > MAX_SEED:
                raise InvalidRequestError(
                    f"random_seed must be below 2**63, got {self.random_seed}."
                )


def _stop_strings(stop: Any) -> tuple[str, ...]:
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        raise InvalidRequestError("stop must be a string or a list of strings, e.g. ['\\n\\n'].")
    if any(s == "" for s in items):
        raise InvalidRequestError("stop strings must not be empty; remove the empty string.")
    if len(items) > MAX_STOP_STRINGS:
        raise InvalidRequestError(f"At most {MAX_STOP_STRINGS} stop strings are allowed.")
    return tuple(items)


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _require_number(name: str, value: Any, low: float, high: float, low_open: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise InvalidRequestError(
            f"{name} must be a number in {bracket}{low}, {high}], got {value!r}."
        )


def sampling_distribution(
    logits: np.ndarray, params: GenerationParams, index: int, eos_id: int
) -> np.ndarray:
    """The probabilities the rules above give each token (vocab,) for the token at `index`."""
    logits = np.asarray(logits, dtype=np.float64).copy()
    if index < params.min_tokens:
        logits[eos_id] = -np.inf
    if params.temperature == 0:
        chosen = np.zeros_like(logits)
        chosen[np.argmax(logits)] = 1.0
        return chosen
    scaled = logits / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]  # mass of the more likely tokens
        probs[order[before >= params.top_p]] = 0.0
        probs /= probs.sum()
    return probs
