"""A fix for the last failed cell: what `%codestral fix` asks Codestral, and what it shows.

The kernel remembers the last cell whose execution raised (its source and exception), from
IPython's `post_run_cell` event. The request is an instruct (chat) request: the cell, the
traceback trimmed to the frames in the user's code, and the live facts of the names the cell
uses (`kernel_facts`' safe rules), asking for the whole corrected cell and nothing else. A chat
request rather than FIM over the failing line, because the fix is often elsewhere in the cell
(an import, a misspelt name defined above) and FIM can only rewrite a gap it is given.
"""

from __future__ import annotations

import difflib
import re
import traceback
from dataclasses import dataclass

from .kernel_facts import facts

FIX_SYSTEM_PROMPT = (
    "You fix Python code in a Jupyter notebook cell. Reply with the whole corrected cell and "
    "nothing else: no explanation, no Markdown fences."
)
MAX_TRACEBACK_LINES = 30
_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_+-]*\s*\n(.*?)\n?\s*```\s*$", re.S)


@dataclass(frozen=True)
class FailedCell:
    source: str
    error: str  # the exception's type and message
    traceback: str  # the frames in the user's code, then the error


class FailureRecorder:
    """Remembers the last cell that raised (a `post_run_cell` callback)."""

    def __init__(self) -> None:
        self.last: FailedCell | None = None

    def __call__(self, result) -> None:
        error = getattr(result, "error_in_exec", None)
        source = getattr(getattr(result, "info", None), "raw_cell", "") or ""
        if error is None or source.lstrip().startswith("%codestral fix"):
            return
        self.last = FailedCell(source, _one_line(error), _user_frames(error))


def fix_messages(failed: FailedCell, namespace: dict) -> list[dict[str, str]]:
    names = list(dict.fromkeys(_NAME.findall(failed.source + "\n" + failed.error)))
    live = facts(names, dict(namespace))
    parts = [
        f"This notebook cell failed:\n\n{failed.source.rstrip()}\n",
        f"Traceback:\n{failed.traceback.rstrip()}\n",
    ]
    if live:
        parts.append("Live objects in the kernel:\n" + "\n".join(f"- {f}" for f in live) + "\n")
    parts.append("Reply with the whole corrected cell.")
    return [
        {"role": "system", "content": FIX_SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(parts)},
    ]


def clean_proposal(text: str) -> str:
    """The proposed cell without Markdown fences the model may add anyway."""
    match = _FENCE.match(text.strip("\n"))
    return (match.group(1) if match else text).strip("\n") + "\n"


def diff(before: str, after: str) -> str:
    """A unified diff of the cell, for the output."""
    lines = difflib.unified_diff(
        before.rstrip("\n").splitlines(), after.rstrip("\n").splitlines(),
        "failed cell", "proposed fix", lineterm="",
    )  # fmt: skip
    return "\n".join(lines) or "(no change proposed)"


def _one_line(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def _user_frames(error: BaseException) -> str:
    """The frames of the user's cells (IPython's cell files), then the error line."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if "ipykernel" in f.filename or f.filename.startswith("<ipython")]
    shown = traceback.format_list(mine or frames[-3:])
    lines = "".join(shown).splitlines()[-MAX_TRACEBACK_LINES:]
    return "\n".join([*lines, _one_line(error)])
