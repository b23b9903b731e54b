"""Prompt-lookup speculative decoding: drafts from the request's own text, verified in one pass.

Code completions repeat their context (the line above, a name, the code after the cursor that
the model is about to type again). The drafter matches the last few tokens against everything
the request has seen (the prompt: prefix and suffix, and the tokens generated so far) and
proposes the tokens that followed the most recent earlier match. The model then reads the
current token and all drafts in one forward pass; the longest prefix of drafts that the
sampling rules would have produced themselves is kept, plus one token of the model's own (the
correction, or the bonus after a fully accepted draft), and the KV cache forgets the rest.

Greedy: a draft is kept while it equals the argmax, so the output is the one-token-at-a-time
output (up to the numerics of reading k+1 tokens at once). Sampling: the standard speculative
sampling rule for a deterministic drafter (a draft d is kept with probability p(d); on a
rejection the token is drawn from p without d, renormalised), so the output distribution is
the model's own; a seeded request draws from its own generator and reproduces.

How many tokens to draft adapts by counts only (never by time, so runs reproduce): more after
a fully accepted draft, fewer after a rejection, and after repeated misses drafting pauses for
a number of steps that doubles, so a request where lookup never helps costs a few percent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .params import GenerationParams, sampling_distribution

# Chosen by measurement (bench/bench_speculative.py, recorded in bench/README.md): on the CPU
# reading 3 tokens in one pass costs ~1.15x a step and 5 tokens ~2x, so drafts stay short.
MAX_DRAFT = 2  # most tokens drafted per step
FIRST_DRAFT = 2  # the first draft's length
NGRAM_MAX = 3  # longest match tried first
NGRAM_MIN = 1  # shortest match accepted
PAUSE_AFTER = 3  # misses in a row before drafting pauses
MAX_PAUSE = 16  # steps; the pause doubles up to this


@dataclass
class DraftStats:
    drafted: int = 0
    accepted: int = 0


class PromptLookup:
    """Drafts the tokens that followed the latest earlier occurrence of the last n tokens."""

    def __init__(self, context: list[int]):
        self._tokens = np.empty(max(64, 2 * len(context)), dtype=np.int64)
        self._length = 0
        self.extend(context)
        self.stats = DraftStats()
        self._size = FIRST_DRAFT
        self._misses = 0  # drafts in a row with nothing accepted
        self._pause = 0  # steps left without drafting
        self._next_pause = 1

    def extend(self, tokens: list[int]) -> None:
        end = self._length + len(tokens)
        if end > len(self._tokens):
            grown = np.empty(2 * end, dtype=np.int64)
            grown[: self._length] = self._tokens[: self._length]
            self._tokens = grown
        self._tokens[self._length : end] = tokens
        self._length = end

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` draft tokens to follow the context (none while drafting pauses)."""
        if limit <= 0:
            return []
        if self._pause:
            self._pause -= 1
            return []
        return self.lookup(min(limit, self._size))

    @property
    def context(self) -> np.ndarray:
        """Every token seen: the prompt, then what was generated."""
        return self._tokens[: self._length]

    def lookup(self, size: int) -> list[int]:
        """The `size` tokens after the latest earlier occurrence of the longest tail n-gram."""
        seen = self.context
        for n in range(min(NGRAM_MAX, self._length - 1), NGRAM_MIN - 1, -1):
            tail = seen[-n:]
            # Starts of earlier occurrences of the last n tokens (not the tail itself).
            hits = np.ones(self._length - n, dtype=bool)
            for i in range(n):
                hits &= seen[i : self._length - n + i] == tail[i]
            starts = np.flatnonzero(hits)
            if len(starts):
                after = starts[-1] + n  # the most recent one
                return seen[after : after + size].tolist()
        return []

    def record(self, drafted: int, accepted: int) -> None:
        """What the model kept of the last draft: adapts the draft length and the pauses."""
        if not drafted:
            return
        if accepted == drafted:
            self._size = min(MAX_DRAFT, self._size + 1)
        else:
            self._size = max(1, min(self._size - 1, accepted + 1))
        if accepted:
            self._misses, self._next_pause = 0, 1
            return
        self._misses += 1
        if self._misses >= PAUSE_AFTER:
            self._pause, self._misses = self._next_pause, 0
            self._next_pause = min(MAX_PAUSE, 2 * self._next_pause)


class Acceptor:
    """The sampling rules applied to a verified draft: how many drafts to keep, and the token
    that follows them."""

    def __init__(self, params: GenerationParams, eos_id: int):
        self.params, self.eos_id = params, eos_id
        self.greedy = params.temperature == 0
        seed = params.random_seed
        self._rng = np.random.default_rng(seed)

    def accept_greedy(self, draft: list[int], targets: list[int]) -> tuple[int, int]:
        """`targets[i]`: the argmax after feed position i (EOS already masked where due)."""
        kept = 0
        while kept < len(draft) and draft[kept] == targets[kept]:
            kept += 1
        return kept, targets[kept]

    def accept_sampled(self, draft: list[int], rows: np.ndarray, index: int) -> tuple[int, int]:
        """`rows[i]`: the logits after feed position i, whose token is number `index + i`."""
        for i, token in enumerate(draft):
            probs = sampling_distribution(rows[i], self.params, index + i, self.eos_id)
            if self._rng.random() < probs[token]:
                continue
            probs[token] = 0.0  # rejected: draw from the rest of p
            total = probs.sum()
            if total <= 0:  # p was all on the draft (cannot happen after a rejection)
                return i, token
            return i, int(self._rng.choice(len(probs), p=probs / total))
        last = sampling_distribution(rows[len(draft)], self.params, index + len(draft), self.eos_id)
        return len(draft), int(self._rng.choice(len(last), p=last))


# What a backend gives the loop: the model's reading of `feed` (appended to the KV cache),
# for its last `rows` positions, as argmaxes (greedy; EOS masked for rows before `index`
# reaches min_tokens) or logits rows: verify(feed, rows, index, greedy).
Verify = Callable[[list[int], int, int, bool], "list[int] | np.ndarray"]


def decode(
    verify: Verify,
    trim: Callable[[int], None],
    prompt_tail: list[int],
    drafter: PromptLookup,
    acceptor: Acceptor,
    max_new_tokens: int,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` tokens, drafting and verifying. `prompt_tail`: what is
    left to feed of the prompt (at least its last token; the first step reads it all, so the
    first token costs one pass, not a prefill and then a step); `trim(n)` forgets the last n
    cached tokens."""
    if max_new_tokens <= 0:
        return
    feed, draft, produced = prompt_tail, [], 0
    while True:
        out = verify(feed, len(draft) + 1, produced, acceptor.greedy)
        if acceptor.greedy:
            kept, token = acceptor.accept_greedy(draft, out)
        else:
            kept, token = acceptor.accept_sampled(draft, out, produced)
        drafter.record(len(draft), kept)
        drafter.stats.drafted += len(draft)
        if kept < len(draft):
            trim(len(draft) - kept)  # the rejected drafts' keys and values
        for accepted in draft[:kept]:
            drafter.stats.accepted += 1  # counted as handed out (a stop may end it here)
            yield accepted
        produced += kept
        yield token
        produced += 1
        drafter.extend([*draft[:kept], token])
        if produced >= max_new_tokens:
            return
        draft = drafter.propose(max_new_tokens - produced - 1)
        feed = [token, *draft]
