"""Streaming text into a cell's output: one display handle, updated a few times a second.

In a notebook the text is re-rendered in place (Markdown, or highlighted Python for code); in a
terminal shell it is printed once as it arrives, never re-printed.
"""

from __future__ import annotations

import sys
import time

from IPython.display import Markdown, display


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

    def append(self, delta: str) -> None:
        self.text += delta
        if not self.in_place:
            sys.stdout.write(delta)
            sys.stdout.flush()
        elif time.monotonic() - self._shown_at >= self.interval:
            self._show()

    def finish(self, note: str = "") -> None:
        """Show the final text (plus a note such as "interrupted")."""
        if self.in_place:
            self._show(note)
        else:
            sys.stdout.write(f"\n{note}\n" if note else "\n")
            sys.stdout.flush()

    def _show(self, note: str = "") -> None:
        before, after = self.around
        shown = before + self.text + after
        body = f"```python\n{shown.rstrip()}\n```" if self.as_code else shown
        content = Markdown(body + (f"\n\n*{note}*" if note else ""))
        if self._handle is None:
            self._handle = display(content, display_id=True)
        else:
            self._handle.update(content)
            self.updates += 1
        self._shown_at = time.monotonic()
