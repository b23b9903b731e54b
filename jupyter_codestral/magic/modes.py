"""What a `%%codestral` cell asks for, as a small registry: each mode says how its prompt is
built; each placement says where the result goes. The magic picks one of each from the options
and knows nothing else about them; a new mode is one function and one `MODES` entry.

Modes:     answer (the cell is a question; chat), hints (the same in a notebook in the teaching
           hints mode: a few sentences, no code), code (write code for the instruction; FIM
           after the notebook's code), fill (the cell is code with one <FILL> marker; FIM).
Placements: output (only the cell's output), below (a new cell), replace (this cell).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from IPython.core.error import UsageError

from ..context.kernel_history import history_cells, live_facts, project_definitions
from ..context.notebook import LINE_RESERVE, NOTE_RESERVE, RESERVE_STEP, Cell, ContextBuilder
from ..context.teaching import HINTS_SYSTEM

FILL_MARKER = "<FILL>"
SYSTEM_PROMPT = (
    "You help a Python user in a Jupyter notebook. Be concise; put code in ```python blocks."
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")

Placement = Literal["output", "below", "replace"]


@dataclass(frozen=True)
class Notebook:
    """What a mode may read: the kernel's namespace, its history, the context budgets and
    where the project's files are (`project_roots`; none: the project context is off)."""

    user_ns: Mapping[str, Any]
    history_chars: int
    variables_chars: int
    use_context: bool = True  # False: --no-context
    project_chars: int = 0
    project_roots: tuple[str, ...] = ()

    def builder(self, history: int = 0) -> ContextBuilder:
        """The lab's context builder, counting characters: the headers within the magic's
        budgets for them, and `history` characters of earlier cells' code."""
        # The builder keeps a step for the cursor's line and a note of cells left out: the
        # magic's cell is sent whole beside it, so they are added, not taken from the history.
        room = history + RESERVE_STEP + NOTE_RESERVE
        return ContextBuilder(
            len, max(room, 2 * LINE_RESERVE), suffix_share=0.0,
            facts_budget=self.variables_chars, project_budget=self.project_chars,
        )  # fmt: skip

    def headers(self, text: str) -> str:
        """The project's definitions and the live objects of the names `text` mentions."""
        header, _, _, _ = self.builder().header(*self._mentions(text))
        return header

    def project_header(self, text: str) -> str:
        """Only the project's definitions of the names `text` mentions."""
        definitions = project_definitions(text, self.user_ns, self.project_roots)
        return self.builder().project_header(definitions, "#")[0]

    def fim(self, mentions: str, before: str, after: str = "") -> tuple[str, str]:
        """The FIM prefix and suffix for code written between `before` and `after` (sent
        whole, as written): the headers for the names `mentions` holds and, within
        `history_chars`, the newest earlier cells, as the lab builds them."""
        if not self.use_context:
            return before, after
        header = self.headers(mentions)
        if self.history_chars <= 0:  # no earlier cells at all
            return header + before, after
        # Cell magics (this very cell among them) are not Python to continue from.
        inputs = [s for s in self.user_ns.get("In", []) if not s.lstrip().startswith("%%")]
        cells = [*history_cells(inputs), Cell("code", "")]
        built = self.builder(self.history_chars).build(cells, len(cells) - 1, 0)
        return header + built.prefix + before, after

    def _mentions(self, text: str) -> tuple[list[str], list]:
        """The live objects' facts and the project's definitions of the names in `text`."""
        facts = live_facts(text, self.user_ns)
        return facts, project_definitions(text, self.user_ns, self.project_roots)

    def interpolate(self, text: str) -> str:
        """`{name}` / `{name.attr}` replaced by its value; unknown names stay as written."""

        def value(match: re.Match) -> str:
            head, *attrs = match.group(1).split(".")
            if head not in self.user_ns:
                return match.group(0)
            obj = self.user_ns[head]
            for attr in attrs:
                if not hasattr(obj, attr):
                    return match.group(0)
                obj = getattr(obj, attr)
            return str(obj)

        return _PLACEHOLDER.sub(value, text)


@dataclass(frozen=True)
class Ask:
    """One request: FIM (prefix, suffix) or chat messages, and the code shown around the text."""

    fim: tuple[str, str] | None = None
    messages: list[dict[str, str]] | None = None
    around: tuple[str, str] = ("", "")

    def result(self, text: str) -> str:
        """The generated text in place: with the code around a filled gap."""
        before, after = self.around
        return before + text + after


@dataclass(frozen=True)
class Mode:
    name: str
    as_code: bool  # the output renders as highlighted code
    build: Callable[[str, Notebook], Ask]


def _answer(cell: str, notebook: Notebook) -> Ask:
    instruction = notebook.interpolate(cell.strip())
    system = SYSTEM_PROMPT
    if notebook.use_context:
        header = notebook.headers(instruction)
        if header:
            system += "\n" + header
    messages = [{"role": "system", "content": system}, {"role": "user", "content": instruction}]
    return Ask(messages=messages)


def _hints(cell: str, notebook: Notebook) -> Ask:
    """The teaching hints mode: an explanation in a few sentences, no code."""
    messages = _answer(cell, notebook).messages or []
    system = f"{HINTS_SYSTEM}\n\n{messages[0]['content']}"
    return Ask(messages=[{"role": "system", "content": system}, *messages[1:]])


def _code(cell: str, notebook: Notebook) -> Ask:
    instruction = notebook.interpolate(cell.strip())
    comment = "".join(f"# {line}\n" for line in instruction.splitlines())
    return Ask(fim=notebook.fim(instruction, comment))


def _fill(cell: str, notebook: Notebook) -> Ask:
    if cell.count(FILL_MARKER) != 1:
        raise UsageError(f"--fill needs exactly one {FILL_MARKER} marker in the cell's code.")
    before, after = cell.split(FILL_MARKER)  # code is sent as written: no {name} interpolation
    return Ask(fim=notebook.fim(cell, before, after), around=(before, after))


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("answer", as_code=False, build=_answer),
        Mode("hints", as_code=False, build=_hints),
        Mode("code", as_code=True, build=_code),
        Mode("fill", as_code=True, build=_fill),
    )
}


def choose(args: Any, hints: bool = False) -> tuple[Mode, Placement]:
    """The mode and placement the parsed options ask for; `hints`: the notebook is in the
    teaching hints mode, where Codestral explains but writes no code."""
    if args.insert and args.replace:
        raise UsageError("Choose one of --insert and --replace.")
    placement: Placement = "below" if args.insert else "replace" if args.replace else "output"
    if hints and (args.fill or placement != "output"):
        raise UsageError(
            "This notebook is in the teaching hints mode: Codestral explains but writes no code "
            "here. Ask your question in a %%codestral cell without --insert, --replace or --fill."
        )
    if hints:
        return MODES["hints"], placement
    if args.fill:
        return MODES["fill"], placement
    return MODES["answer" if placement == "output" else "code"], placement
