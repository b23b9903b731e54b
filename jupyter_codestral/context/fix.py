"""A fix for a failed cell: what Codestral is asked, and how its answer is cleaned.

Two ways in, one request. `%codestral fix` takes the kernel's last failed cell (IPython's
`post_run_cell` event: the source and the exception); JupyterLab's "Fix with Codestral" sends the
cell, its error output and the notebook (`POST codestral/fix`). Either way the request is an
instruct (chat) request: the cell, the traceback trimmed to the frames in the user's code, the
live facts of the names involved (`kernel_facts`' safe rules) and, from the lab, the nearby cells,
asking for the whole corrected cell and nothing else. A chat request rather than FIM over the
failing line, because the fix is often elsewhere in the cell (an import, a misspelt name defined
above) and FIM can only rewrite a gap it is given. In the teaching "hints" mode the same request
asks for a one- or two-sentence explanation instead of code.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

FIX_SYSTEM_PROMPT = (
    "You fix Python code in a Jupyter notebook cell. Reply with the whole corrected cell and "
    "nothing else: no explanation, no Markdown fences."
)
EXPLAIN_SYSTEM_PROMPT = (
    "You help a student whose Jupyter notebook cell failed. In one or two short sentences, "
    "explain why it failed and what to change. Do not write the corrected code."
)
EXPLAIN_TOKENS = 120
MAX_TRACEBACK_LINES = 30
_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FENCE = re.compile(r"\s*```[A-Za-z0-9_+.-]*\s*")
# How IPython names a frame in a notebook cell: "Cell In[3], line 2" (8.x and later), "Input In
# [3]" (7.x), "<ipython-input-3-…>" (older).
_USER_FRAME = re.compile(r"^(Cell In\[|Input In \[|.*<ipython-input-)")
_TEMP_FILE = re.compile(r" \(\d+\.py, line \d+\)$")  # IPython's file name for a cell
# A chained exception's own error line, and the line joining it to the next one.
_CHAINED = re.compile(
    r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)(: .*)?|The above exception.*"
    r"|During handling of the above exception.*)$"
)


@dataclass(frozen=True)
class FailedCell:
    source: str
    error: str  # the exception's type and message
    traceback: str  # the frames in the user's code, then the error

    def names(self) -> list[str]:
        """The names the cell and its error mention, for the kernel-facts probe."""
        return list(dict.fromkeys(_NAME.findall(self.source + "\n" + self.error)))


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


def fix_messages(
    failed: FailedCell,
    facts: Sequence[str] = (),
    *,
    above: str = "",
    below: str = "",
    explain: bool = False,
    project: str = "",
) -> list[dict[str, str]]:
    """The chat request for `failed`: `facts` are kernel-facts lines, `above` / `below` the
    nearby cells as the ghost text's context builder renders them (within its budget),
    `project` the signatures of the project's code the cell uses (the same header)."""
    parts = [project.rstrip() + "\n"] if project.strip() else []
    if above.strip():
        parts.append(f"The notebook's cells above it:\n\n{above.rstrip()}\n")
    parts += [
        f"This notebook cell failed:\n\n{failed.source.rstrip()}\n",
        f"Traceback:\n{failed.traceback.rstrip()}\n",
    ]
    if below.strip():
        parts.append(f"The cells below it:\n\n{below.strip()}\n")
    if facts:
        parts.append("Live objects in the kernel:\n" + "\n".join(f"- {f}" for f in facts) + "\n")
    parts.append(
        "Explain the error briefly." if explain else "Reply with the whole corrected cell."
    )
    system = EXPLAIN_SYSTEM_PROMPT if explain else FIX_SYSTEM_PROMPT
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]


def from_error_output(source: str, ename: str, evalue: str, lines: Sequence[str]) -> FailedCell:
    """A failed cell from a notebook's error output (IPython's traceback lines, with colours)."""
    evalue = _TEMP_FILE.sub("", evalue)  # "invalid syntax (3602400769.py, line 1)"
    error = f"{ename}: {evalue}" if evalue else ename
    return FailedCell(source, error, trim_traceback(lines, error))


def trim_traceback(lines: Sequence[str], error: str) -> str:
    """The frames of the user's cells (and the one that raised), chained exceptions' own error
    lines, then the error line: what matters in a traceback IPython formatted, without its
    colours, banner and library frames."""
    entries = [_ANSI.sub("", line).rstrip("\n") for line in lines]
    entries = [e for e in entries if e.strip() and not e.lstrip().startswith("-" * 10)]
    name = error.split(":", 1)[0]
    if entries:  # the error line(s) at the end: added back once, below
        last = entries[-1].splitlines()
        while last and (
            last[-1].strip() == error.strip()
            or last[-1].startswith(f"{name}:")
            or last[-1].strip() == name
        ):
            last.pop()
        entries[-1:] = ["\n".join(last)] if "".join(last).strip() else []
    kept = [e for e in entries if _USER_FRAME.match(e.lstrip()) or _CHAINED.match(e.strip())]
    if entries and entries[-1] not in kept:
        kept.append(entries[-1])  # where it raised: inside a library, or a syntax error's line
    text = "\n".join(kept).splitlines()[-MAX_TRACEBACK_LINES:]
    return "\n".join([*text, error])


class ProposalFilter:
    """Cleans a streamed proposal as it comes: drops a Markdown fence the model adds anyway (an
    opening line, after any blank lines; then its closing line and whatever follows it).
    `feed` returns what can be shown now; a line that may still be a fence waits for its end."""

    def __init__(self) -> None:
        self._pending = ""  # the last line's text not shown yet
        self._started = False  # past the first line with text (where an opening fence goes)
        self._fenced = False  # an opening fence was dropped: a bare ``` line closes it
        self._mid_line = False  # part of the last line is shown: the rest is code
        self.closed = False  # the closing fence came: the rest is prose

    def feed(self, delta: str) -> str:
        if self.closed:
            return ""
        self._pending += delta
        shown = []
        while "\n" in self._pending and not self.closed:
            line, self._pending = self._pending.split("\n", 1)
            shown.append(line + "\n" if self._mid_line else self._line(line, complete=True))
            self._mid_line = False
        head = self._pending.lstrip()
        if not self.closed and head and not head.startswith("`"):
            shown.append(self._pending)  # cannot become a fence: show it as it grows
            self._pending, self._mid_line, self._started = "", True, True
        return "".join(shown)

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        if self.closed or self._mid_line:
            return "" if self.closed else rest
        return self._line(rest, complete=False)

    def _line(self, line: str, complete: bool) -> str:
        end = "\n" if complete else ""
        if not self._started:
            if not line.strip():
                return ""  # blank lines before the code
            self._started = True
            if _FENCE.fullmatch(line):
                self._fenced = True
                return ""
        elif self._fenced and line.strip() == "```":
            self.closed = True
            return ""
        return line + end


def clean_proposal(text: str) -> str:
    """The proposed cell without Markdown fences the model may add anyway."""
    cleaner = ProposalFilter()
    cleaned = cleaner.feed(text) + cleaner.finish()
    return cleaned.strip("\n") + "\n"


def diff(before: str, after: str) -> str:
    """A unified diff of the cell, for the output."""
    lines = difflib.unified_diff(
        before.rstrip("\n").splitlines(),
        after.rstrip("\n").splitlines(),
        "failed cell",
        "proposed fix",
        lineterm="",
    )
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
