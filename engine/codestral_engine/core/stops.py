"""Stop strings over a text stream: nothing of a stop string is ever emitted.

Text that might be the start of a stop string (a stop split across tokens) is held back until
the next delta shows whether it is one.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]):
        self._stops = stops
        self._pending = ""

    def push(self, text: str, check: bool = True) -> tuple[str, bool]:
        """Feed a delta; returns (text safe to emit, whether a stop string was reached)."""
        buffer = self._pending + text
        self._pending = ""
        if not check or not self._stops:
            return buffer, False
        hits = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            return buffer[: min(hits)], True
        hold = self._partial_stop_length(buffer)
        self._pending = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """Text held back when the stream ends for another reason."""
        text, self._pending = self._pending, ""
        return text

    def _partial_stop_length(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:k]):
                    longest = k
                    break
        return longest
