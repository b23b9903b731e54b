"""What the model is told about the notebook: earlier cells' code and the live objects in use.

Budgets are in characters (about 3.5 per token for Python code), so building context never
needs the tokenizer in the kernel. The newest cells are kept when the history is too long; the
header describes only the names the cell mentions, DataFrames and arrays first-class.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Mapping
from typing import Any

_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
MAGIC_PREFIXES = ("%", "!", "?")
MAX_COLUMNS = 25


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
        value = namespace[name]
        if type(value).__name__ in ("module", "function", "builtin_function_or_method", "type"):
            continue
        lines.append(f"# {name}: {describe(value)}\n")
    header, used = "", 0
    for line in lines:
        if used + len(line) > budget:
            break
        header += line
        used += len(line)
    if header:
        header = "# Variables in this notebook:\n" + header
    return header


def describe(value: Any) -> str:
    """One line about a value: DataFrame columns and dtypes, array shape and dtype, or type."""
    kind = f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"
    if kind == "pandas.DataFrame":
        rows, cols = value.shape
        columns = [f"{c} ({t})" for c, t in zip(value.columns, value.dtypes, strict=False)]
        more = f", … {len(columns) - MAX_COLUMNS} more" if len(columns) > MAX_COLUMNS else ""
        listed = ", ".join(columns[:MAX_COLUMNS])
        return f"pandas.DataFrame, {rows} rows x {cols} columns: {listed}{more}"
    if kind == "pandas.Series":
        return f"pandas.Series '{value.name}', {len(value)} values ({value.dtype})"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:
        return f"{kind}, shape {shape}, dtype {dtype}"
    if isinstance(value, (list, tuple, set, dict)):
        return f"{type(value).__name__} of {len(value)} items"
    if isinstance(value, (int, float, bool, str)):
        text = repr(value)
        return f"{type(value).__name__} = {text if len(text) <= 40 else text[:37] + '...'}"
    return kind


def _python_lines(source: str) -> str:
    return "".join(
        line
        for line in source.splitlines(keepends=True)
        if not line.lstrip().startswith(MAGIC_PREFIXES)
    )
