"""What the model is told about the notebook: earlier cells' code, the live objects in use and
the project's own definitions of the names the cell mentions.

Budgets are in characters (about 3.5 per token for Python code), so building context never
needs the tokenizer in the kernel. The newest cells are kept when the history is too long; the
headers describe only the names the cell mentions, by `kernel_facts`' safe rules (DataFrames and
arrays first-class; no user code runs); the project's definitions are read from source files
under the project's root (`project_roots`), never imported.
"""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .kernel_facts import facts, origins
from .notebook import render_definitions
from .project import Origin, ProjectContext
from .project_outline import ProjectFiles

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


PROJECT_MARKERS = (".git", "pyproject.toml", "setup.py", "setup.cfg")


def project_roots(cwd: str | os.PathLike, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Where a kernel's project lies: the nearest directory at or above `cwd` (below the
    home directory) with a project marker (.git, pyproject.toml, setup.py, setup.cfg), else
    `cwd` itself; then the `extra` directories a user lists. A kernel does not know the
    Jupyter server's root, so this is the magic's boundary for reading files."""
    here = Path(cwd).resolve()
    home = Path.home().resolve()
    for folder in (here, *here.parents):
        if folder == home or folder == folder.parent:
            break
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return (str(folder), *extra)
    if here == here.parent:  # a kernel started at / : the whole machine is no project
        return tuple(extra)
    return (str(here), *extra)


@lru_cache(maxsize=4)
def _project(roots: tuple[str, ...]) -> ProjectContext:
    return ProjectContext(ProjectFiles(roots))


def project_header(
    text: str, namespace: Mapping[str, Any], budget: int, roots: tuple[str, ...]
) -> str:
    """The project's definitions of the names `text` mentions, found where the kernel got
    them, as a comment header within `budget` characters."""
    names = [n for n in dict.fromkeys(_NAME.findall(text))
             if not keyword.iskeyword(n) and not n.startswith("_")]  # fmt: skip
    found = [Origin(*o) for o in origins(names, dict(namespace))]
    if not found:
        return ""
    definitions = _project(roots).definitions(None, [text], 0, None, found, focus=names)
    header, _, _ = render_definitions(definitions, "#", budget, len)
    return header


def _python_lines(source: str) -> str:
    return "".join(
        line
        for line in source.splitlines(keepends=True)
        if not line.lstrip().startswith(MAGIC_PREFIXES)
    )
