"""The FIM prefix and suffix for a cursor in a notebook, under a budget: the one context
builder of the lab (the notebook's cells, counted in tokens) and the magic (the kernel's
history, counted in characters).

The current cell is split at the cursor; then the nearest cells are added, above to the prefix
and below to the suffix, while they fit. Markdown becomes comments; cells left out are noted.

Window boundaries are chosen for the prompt cache. Codestral's FIM prompt is
`[SUFFIX] suffix [PREFIX] prefix`, so typing at the cursor changes only the tail of the token
sequence as long as the suffix and the *start* of the prefix stay put:

- the suffix depends only on the text after the cursor, which typing does not change;
- the cells above are chosen against a reserve for the current cell that counts the lines
  before the cursor's line plus room for that line (`LINE_RESERVE`), rounded up to
  `RESERVE_STEP` tokens. Typing within a line never changes it; pressing Enter changes it
  only when the rounded reserve crosses a step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .project import Definition

DEFAULT_BUDGET = 2048  # prompt tokens: llama.vim and Tabby use about 1.5-2K for FIM
DEFAULT_SUFFIX_SHARE = 0.25  # prefix:suffix = 3:1, the split llama.cpp's /infill uses
LINE_RESERVE = 96  # tokens kept for the line being typed
RESERVE_STEP = 128  # the current cell's reserve grows in steps of this many tokens
CUT_STEP_LINES = 16  # an over-long current cell is cut at multiples of this many lines
CUT_STEP_CHARS = 256  # an over-long cursor line is cut at multiples of this many characters
MAX_TOKEN_CHARS = 64  # no Codestral token spells more (its longest: 16; a safe bound)
SEPARATOR = "\n\n"
NOTE_RESERVE = 16  # tokens for the "(N earlier cells not shown)" comment
FACTS_SHARE = 0.125  # of the budget, at most, for the kernel's live objects
PROJECT_SHARE = 0.25  # of the budget, at most, for the project's own definitions

COMMENT_PREFIX = {
    "python": "#", "r": "#", "julia": "#", "bash": "#", "sh": "#", "ruby": "#", "perl": "#",
    "javascript": "//", "typescript": "//", "java": "//", "c": "//", "c++": "//", "cpp": "//",
    "rust": "//", "go": "//", "scala": "//", "kotlin": "//", "swift": "//", "csharp": "//",
    "sql": "--", "haskell": "--", "lua": "--",
}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    kind: str  # "code", "markdown" or "raw"
    source: str


@dataclass(frozen=True)
class FIMContext:
    prefix: str
    suffix: str
    prefix_tokens: int  # as counted piece by piece (an upper bound of the joined count)
    suffix_tokens: int
    cells_above: int  # cells above the current one that made it into the prefix (even partly)
    cells_below: int
    elided_above: int  # cells left out entirely
    elided_below: int
    facts: int = 0  # kernel facts in the header
    definitions: int = 0  # the project's definitions in the header


class TokenCounter:
    """Counts tokens with the model's tokenizer, remembering the counts of recent texts."""

    def __init__(self, count: Callable[[str], int], size: int = 4096):
        self._count = count
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._size = size

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        if (n := self._cache.get(text)) is not None:
            self._cache.move_to_end(text)
            return n
        n = self._count(text)
        self._cache[text] = n
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return n


class ContextBuilder:
    """Builds prompts within `budget` as `count` measures it (tokens for ghost text, characters
    for the magic). The header's parts take at most `facts_budget` and `project_budget` of it
    (default: FACTS_SHARE and PROJECT_SHARE of the budget)."""

    def __init__(
        self,
        count: Callable[[str], int],
        budget: int = DEFAULT_BUDGET,
        suffix_share: float = DEFAULT_SUFFIX_SHARE,
        *,
        facts_budget: int | None = None,
        project_budget: int | None = None,
    ):
        if budget < 2 * LINE_RESERVE:
            raise ValueError(f"The context budget must be at least {2 * LINE_RESERVE} tokens.")
        if not 0.0 <= suffix_share < 1.0:
            raise ValueError("The suffix share must be at least 0 and below 1.")
        self.count = count if isinstance(count, TokenCounter) else TokenCounter(count)
        self.budget = budget
        self.suffix_share = suffix_share
        self.facts_budget = int(budget * FACTS_SHARE) if facts_budget is None else facts_budget
        self.project_budget = (
            int(budget * PROJECT_SHARE) if project_budget is None else project_budget
        )

    def build(
        self,
        cells: Sequence[Cell],
        index: int,
        cursor: int,
        language: str = "python",
        facts: Sequence[str] = (),
        definitions: Sequence[Definition] = (),
    ) -> FIMContext:
        """The context for the cursor at character `cursor` of `cells[index]`; `definitions`
        (the project's code the document uses, most wanted first) and `facts` (live objects
        in the kernel) open the prefix as a comment header, within PROJECT_SHARE and
        FACTS_SHARE of the budget. They change only on an execution, a save or a move to
        another cell, so typing keeps the header, and the prompt cache with it."""
        if not 0 <= index < len(cells):
            raise ValueError(f"Cell index {index} is outside the notebook's {len(cells)} cells.")
        current = cells[index].source
        if not 0 <= cursor <= len(current):
            raise ValueError(f"Cursor {cursor} is outside the cell's {len(current)} characters.")
        comment = COMMENT_PREFIX.get(language.lower(), "#")

        suffix_budget = round(self.budget * self.suffix_share)
        suffix_parts, suffix_tokens, below = self._suffix(
            current[cursor:], cells[index + 1 :], suffix_budget, comment
        )
        header, header_tokens, shown_definitions, shown_facts = self.header(
            facts, definitions, comment
        )
        prefix_budget = self.budget - suffix_tokens - header_tokens
        head = current[:cursor]
        line_start = head.rfind("\n") + 1
        line = self._cap_line(head[line_start:], prefix_budget // 2)
        head_parts, reserve = self._current_head(head[:line_start], line, prefix_budget)
        above_parts, above_tokens, above = self._above(
            cells[:index], prefix_budget - reserve - NOTE_RESERVE, comment
        )
        elided_above = index - above
        elided_below = len(cells) - index - 1 - below
        note = []
        if elided_above:
            note = [f"{comment} ({elided_above} earlier cell{'s' if elided_above > 1 else ''} "
                    "not shown)"]  # fmt: skip
        prefix = header + SEPARATOR.join([*note, *above_parts, ""]) + "".join(head_parts)
        prefix_tokens = above_tokens + sum(self.count(p) + 1 for p in head_parts)
        return FIMContext(
            prefix=prefix,
            suffix="".join(suffix_parts),
            prefix_tokens=prefix_tokens + (self.count(note[0]) + 1 if note else 0) + header_tokens,
            suffix_tokens=suffix_tokens,
            cells_above=above,
            cells_below=below,
            elided_above=elided_above,
            elided_below=elided_below,
            facts=shown_facts,
            definitions=shown_definitions,
        )

    def header(
        self, facts: Sequence[str], definitions: Sequence[Definition], comment: str = "#"
    ) -> tuple[str, int, int, int]:
        """The prompt's opening comment: the project's definitions, then the kernel's live
        objects. Returns the text, its cost and how many definitions and facts it shows."""
        project, project_cost, shown_definitions = self.project_header(definitions, comment)
        live, live_cost, shown_facts = self._facts_header(facts, comment)
        return project + live, project_cost + live_cost, shown_definitions, shown_facts

    def project_header(
        self, definitions: Sequence[Definition], comment: str
    ) -> tuple[str, int, int]:
        """The project's definitions as comment lines within the project's budget."""
        return render_definitions(
            definitions, comment, self.project_budget, lambda t: self.count(t) + 1
        )

    def _facts_header(self, facts: Sequence[str], comment: str) -> tuple[str, int, int]:
        """The kernel's live objects as comment lines, as many as fit the facts' budget."""
        if not facts:
            return "", 0, 0
        budget = self.facts_budget
        lines = [f"{comment} Live objects in the kernel:\n"]
        used = self.count(lines[0]) + 1
        for fact in facts:
            line = f"{comment} {fact}\n"
            n = self.count(line) + 1
            if used + n > budget:
                break
            lines.append(line)
            used += n
        if len(lines) == 1:
            return "", 0, 0
        return "".join(lines) + "\n", used + 1, len(lines) - 1

    # The suffix: the rest of the cell, then the cells below, nearest first.
    def _suffix(self, tail: str, below: Sequence[Cell], budget: int, comment: str):
        parts: list[str] = []
        used = 0
        tail_lines = tail.splitlines(keepends=True)
        for line in tail_lines:
            n = self.count(line) + 1
            if used + n > budget:
                return parts, used, 0
            parts.append(line)
            used += n
        included = 0
        for cell in below:
            text = SEPARATOR + render(cell, comment)
            n = self.count(text) + 1
            if used + n <= budget:
                parts.append(text)
                used += n
                included += 1
                continue
            lines = text.splitlines(keepends=True)
            kept = []
            for line in lines:
                n = self.count(line) + 1
                if used + n > budget:
                    break
                kept.append(line)
                used += n
            if len(kept) > 1:  # more than the separator's blank line
                parts.extend(kept)
                included += 1
            break
        return parts, used, included

    # The cursor's own line: whole when it fits `room`, else its end nearest the cursor (a
    # 60 KB base64 string must not swamp the budget). The cut sits at a multiple of
    # CUT_STEP_CHARS from the line's start, so it stays put while the user types at the end.
    def _cap_line(self, line: str, room: int) -> str:
        if len(line.encode("utf-8")) <= room:  # a token spells at least one byte: it fits
            return line
        # No token spells more than MAX_TOKEN_CHARS characters, so the longest end that can
        # fit is bounded before any counting (a 7.9 MB line is never tokenized whole).
        low = _step_up(max(0, len(line) - room * MAX_TOKEN_CHARS)) // CUT_STEP_CHARS
        high = _step_up(len(line)) // CUT_STEP_CHARS  # cutting everything always fits
        while low < high:  # the first cut whose end fits (fewer characters, fewer tokens)
            middle = (low + high) // 2
            if self.count(line[middle * CUT_STEP_CHARS :]) + 1 <= room:
                high = middle
            else:
                low = middle + 1
        return line[low * CUT_STEP_CHARS :]

    # The current cell before the cursor: whole when it fits, else its last lines, cut at
    # multiples of CUT_STEP_LINES so the cut stays put while the user types.
    def _current_head(self, before_line: str, line: str, budget: int):
        line_room = max(LINE_RESERVE, self.count(line) + 1)
        lines = before_line.splitlines(keepends=True)
        start = 0
        while True:
            kept = "".join(lines[start:])
            used = self.count(kept) + 1
            if used + line_room <= budget or start >= len(lines):
                break
            start = min(len(lines), start + CUT_STEP_LINES)
        reserve = math.ceil((used + line_room) / RESERVE_STEP) * RESERVE_STEP
        return [kept, line], min(reserve, budget)

    # The cells above, nearest first; the first that does not fit whole contributes its last
    # lines, and those further up are left out.
    def _above(self, above: Sequence[Cell], budget: int, comment: str):
        chosen: list[str] = []
        used = 0
        for cell in reversed(above):
            text = render(cell, comment)
            n = self.count(text) + 2
            if used + n <= budget:
                chosen.append(text)
                used += n
                continue
            kept: list[str] = []
            for line in reversed(text.splitlines(keepends=True)):
                n = self.count(line) + 1
                if used + n + 1 > budget:
                    break
                kept.append(line)
                used += n
            if kept:
                chosen.append("".join(reversed(kept)).rstrip("\n"))
                used += 1
            break
        return list(reversed(chosen)), used, len(chosen)


def render_definitions(
    definitions: Sequence[Definition], comment: str, budget: int, cost: Callable[[str], int]
) -> tuple[str, int, int]:
    """The project's definitions as a comment header: whole ones, in order, while their
    `cost` fits `budget` (tokens for ghost text, characters for the magic); each file named
    before its first definition shown. Returns the text, its cost and how many are shown."""
    if not definitions:
        return "", 0, 0
    lines = [f"{comment} From the project's own files:\n"]
    used, shown, where = cost(lines[0]) + 1, 0, None
    more = f"{comment}     ...\n"
    for definition in definitions:
        block = [f"{comment} {definition.where}:\n"] if definition.where != where else []
        block += [f"{comment} {line}\n" for line in definition.lines]
        costs = [cost(line) for line in block]
        if used + sum(costs) > budget:
            # Too big whole (a large class): its first lines, down to the signature, and a
            # mark; a class lists its `__init__` first, so what a call needs comes first.
            head = len(block) - len(definition.lines)
            head += next((i for i, x in enumerate(definition.lines) if x[:1] != "@"), 0) + 1
            room = budget - used - cost(more)
            keep = 0
            while keep < len(block) and sum(costs[: keep + 1]) <= room:
                keep += 1
            if keep < head:
                continue
            block, costs = [*block[:keep], more], [*costs[:keep], cost(more)]
        lines += block
        used += sum(costs)
        shown += 1
        where = definition.where
    if not shown:
        return "", 0, 0
    return "".join(lines) + "\n", used, shown


def _step_up(chars: int) -> int:
    return -(-chars // CUT_STEP_CHARS) * CUT_STEP_CHARS


def render(cell: Cell, comment: str = "#") -> str:
    """A cell as it appears in the prompt: code as is, markdown and raw text as comments."""
    source = cell.source.rstrip("\n")
    if cell.kind == "code":
        return source
    return "\n".join(f"{comment} {line}".rstrip() for line in source.splitlines())
