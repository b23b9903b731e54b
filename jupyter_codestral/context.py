"""What the model is told about the notebook: earlier cells' code and the live objects in use.

Budgets are in characters (about 3.5 per token for Python code), so building context never
needs the tokenizer in the kernel. The newest cells are kept when the history is too long; the
header describes only the names the cell mentions, by `kernel_facts`' safe rules (DataFrames and
arrays first-class; no user code runs).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .kernel_facts import facts

_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
MAGIC_PREFIXES = ("%", "!", "?")


def history_code(inputs: Iterable[str], budget: int) -> str:
    """Code of earlier executed cells, newest kept first, within `budget` characters.

    Magics and shell escapes are left out (they are not Python the model should continue).
    """
    kept: list[str] = []
    used = 0
    for source in reversed([s for s in inputs if s and s.strip()]):
        code = _python_lines(source)
        if not code:
            continue
        if used + len(code) + 2 > budget:
            kept.append("# (earlier cells omitted)\n")
            break
        kept.append(code.rstrip() + "\n\n")
        used += len(code) + 2
    return "".join(reversed(kept))


def variables_header(text: str, namespace: Mapping[str, Any], budget: int) -> str:
    """`# name: description` lines for live objects that `text` mentions, within `budget`."""
    lines = []
    for name in dict.fromkeys(_NAME.findall(text)):  # first mention order, no repeats
        if keyword.iskeyword(name) or name.startswith("_") or name not in namespace:
            continue
        described = facts([name], dict(namespace))  # the same safe rules as ghost text's
        if described:
            lines.append(f"# {described[0]}\n")
    header, used = "", 0
    for line in lines:
        if used + len(line) > budget:
            break
        header += line
        used += len(line)
    if header:
        header = "# Variables in this notebook:\n" + header
    return header


def _python_lines(source: str) -> str:
    return "".join(
        line
        for line in source.splitlines(keepends=True)
        if not line.lstrip().startswith(MAGIC_PREFIXES)
    )
