"""Streaming text into a cell's output: one display handle, updated a few times a second.

In a notebook the text is re-rendered in place (Markdown, or highlighted Python for code); in a
terminal shell it is printed once as it arrives, never re-printed. Until the first text arrives
(the engine starting, loading or prefilling) the output says it is waiting.
"""

from __future__ import annotations

import sys
import time

from IPython.display import Markdown, display

WAITING = "waiting for Codestral…"


class LiveOutput:
    def __init__(
        self,
        *,
        as_code: bool,
        in_place: bool,
        interval: float = 0.25,
        around: tuple[str, str] = ("", ""),
    ):
        """`around`: code shown before and after the streamed text (the gap being filled)."""
        self.as_code = as_code
        self.around = around
        self.in_place = in_place
        self.interval = interval
        self.text = ""
        self.updates = 0
        self._handle = None
        self._shown_at = 0.0
        self._erase_waiting = False

    def waiting(self, note: str = "") -> None:
        """Say at once that the request is on its way (replaced by the first text); called
        again with a note ("2 requests ahead") once that is known."""
        line = f"{WAITING} ({note})" if note else WAITING
        if self.in_place:
            self._show(line)
        elif note:
            return  # a terminal shows the plain line only
        elif sys.stdout.isatty():
            # The cursor goes back to the line's start: a note printed meanwhile overwrites it.
            sys.stdout.write(WAITING + "\r")
            sys.stdout.flush()
            self._erase_waiting = True

    def append(self, delta: str) -> None:
        if self._erase_waiting:
            sys.stdout.write("\r\x1b[K")  # the terminal line that said "waiting"
            self._erase_waiting = False
        first = not self.text
        self.text += delta
        if not self.in_place:
            sys.stdout.write(delta)
            sys.stdout.flush()
        elif first or time.monotonic() - self._shown_at >= self.interval:
            self._show()  # the first text replaces the waiting line at once

    def finish(self, note: str = "") -> None:
        """Show the final text (plus a note such as "interrupted")."""
        if self._erase_waiting:
            sys.stdout.write("\r\x1b[K")
            self._erase_waiting = False
        if self.in_place:
            self._show(note)
        else:
            sys.stdout.write(f"\n{note}\n" if note else "\n")
            sys.stdout.flush()

    def _show(self, note: str = "") -> None:
        before, after = self.around
        shown = before + self.text + after
        if self.as_code and shown:
            shown = f"```python\n{shown.rstrip()}\n```"
        content = Markdown("\n\n".join(part for part in (shown, note and f"*{note}*") if part))
        if self._handle is None:
            self._handle = display(content, display_id=True)
        else:
            self._handle.update(content)
            self.updates += 1
        self._shown_at = time.monotonic()
