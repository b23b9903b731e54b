"""Reuse of KV caches across requests by longest common token prefix.

Codestral's FIM layout is `<s>[SUFFIX]suffix[PREFIX]prefix`: typing at the cursor changes only
the tail, so the previous request's cache covers all but the last few tokens. A request takes
the entry sharing the longest prefix with it, trims it back to that prefix and prefills only the
rest. An entry that would lose most of its tokens is copied by prefix instead of trimmed, so a
request that diverges early does not destroy a cache another context (a second cell) still needs.
Bounded in entries and bytes, least recently used first out. Used from the worker thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .backend import KVState


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differs = a[:n] != b[:n]
    return int(differs.argmax()) if differs.any() else n


class PromptCache:
    def __init__(self, max_bytes: int, max_entries: int = 8):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[int, tuple[np.ndarray, KVState]] = OrderedDict()
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(kv.nbytes for _, kv in self._entries.values())

    def take(self, tokens: Sequence[int]) -> tuple[KVState | None, int]:
        """A cache holding the longest reusable prefix of `tokens`, and that prefix's length.

        At least one token is always left to prefill (the model needs it to produce logits).
        The caller owns the returned cache and gives it back with `put`.
        """
        ids = np.asarray(tokens, dtype=np.int64)
        best_key, best_len = None, 0
        for key, (cached, _kv) in self._entries.items():
            n = common_prefix_length(cached, ids)
            if n > best_len:
                best_key, best_len = key, n
        reuse = min(best_len, len(ids) - 1)
        if best_key is None or reuse <= 0:
            return None, 0
        cached, kv = self._entries[best_key]
        if reuse * 2 >= len(cached):
            del self._entries[best_key]
            kv.trim_to(reuse)
            return kv, reuse
        # Not a use of the entry: every FIM prompt shares its first tokens with every other.
        return kv.prefix_copy(reuse), reuse

    def put(self, tokens: Sequence[int], kv: KVState) -> None:
        """Keep `kv`, which holds the keys/values of exactly `tokens`."""
        ids = np.asarray(tokens, dtype=np.int64)
        if len(ids) == 0 or kv.length != len(ids):
            return
        # An entry that is a prefix of the new one adds nothing the new one cannot serve.
        for key in [
            k for k, (c, _) in self._entries.items() if common_prefix_length(c, ids) == len(c)
        ]:
            del self._entries[key]
        self._entries[self._next_key] = (ids, kv)
        self._next_key += 1
        while len(self._entries) > self.max_entries or (
            self.nbytes > self.max_bytes and self._entries
        ):
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
