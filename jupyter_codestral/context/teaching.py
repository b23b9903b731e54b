"""What the teaching modes mean, in one place for every part that applies them: a notebook's
`codestral` metadata (`{"enabled": false}` turns Codestral off in it, `{"mode": "hints"}` gives
hints only; the lab reads it in the browser, the magic from the notebook's file) and the
classroom service's JupyterHub groups (`classroom.policy`).

Hints: one-line completions, and answers that explain in a few sentences without writing code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache

HINTS_MAX_TOKENS = 48  # one line of code
HINTS_CHAT_MAX_TOKENS = 200  # a few sentences
HINTS_SYSTEM = (
    "You are a teaching assistant in a course's hints mode. Explain in at most three short "
    "sentences what to look at or which idea to use. Never write code, never use code blocks, "
    "never give the corrected program."
)
NOTEBOOK_ENV = "JPY_SESSION_NAME"  # the notebook's path, which jupyter_server gives kernels


@dataclass(frozen=True)
class NotebookPolicy:
    """A notebook's teaching switches (its `codestral` metadata)."""

    enabled: bool = True
    hints: bool = False

    def refusal(self) -> str | None:
        """Why Codestral may not answer here, or None."""
        if self.enabled:
            return None
        return (
            "Codestral is turned off in this notebook by its teacher (the notebook's metadata "
            'says "codestral": {"enabled": false}).'
        )


def kernel_notebook_policy() -> NotebookPolicy:
    """The policy of the notebook this kernel runs for, read from its saved file (the kernel
    knows the notebook only by the path jupyter_server gave it at start); the default policy
    outside a notebook (a terminal, a script) or when the file cannot be read."""
    path = os.environ.get(NOTEBOOK_ENV, "")
    if not path.endswith(".ipynb"):
        return NotebookPolicy()
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return NotebookPolicy()
    return _policy_of(path, stamp)


@lru_cache(maxsize=8)
def _policy_of(path: str, stamp: int) -> NotebookPolicy:
    try:
        with open(path, encoding="utf-8") as file:
            metadata = json.load(file).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return NotebookPolicy()
    settings = metadata.get("codestral", {}) if isinstance(metadata, dict) else {}
    if not isinstance(settings, dict):
        return NotebookPolicy()
    return NotebookPolicy(
        enabled=settings.get("enabled") is not False, hints=settings.get("mode") == "hints"
    )
