"""The magic's sources of context, from inside the kernel: earlier cells' code (the kernel's
history), the live objects and the project's definitions of the names a cell mentions.

`ContextBuilder` (notebook.py) budgets them as it does the lab's notebook, in characters
(about 3.5 per token for Python code), so building context never needs the tokenizer in the
kernel. The live objects are described by `kernel_facts`' safe rules (DataFrames and arrays
first-class; no user code runs); the project's definitions are read from source files under
the project's root (`project_roots`), never imported.
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
from .notebook import Cell
from .project import Definition, Origin, ProjectContext
from .project_outline import ProjectFiles

_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
MAGIC_PREFIXES = ("%", "!", "?")
PROJECT_MARKERS = (".git", "pyproject.toml", "setup.py", "setup.cfg")


def history_cells(inputs: Iterable[str]) -> list[Cell]:
    """Earlier executed cells as code cells, oldest first, without their magics and shell
    escapes (they are not Python the model should continue); empty ones left out."""
    cells = []
    for source in inputs:
        code = "".join(
            line
            for line in (source or "").splitlines(keepends=True)
            if not line.lstrip().startswith(MAGIC_PREFIXES)
        )
        if code.strip():
            cells.append(Cell("code", code.rstrip("\n")))
    return cells


def mentioned(text: str) -> list[str]:
    """The names `text` mentions, in first-mention order, without keywords or private names."""
    return [
        name
        for name in dict.fromkeys(_NAME.findall(text))
        if not keyword.iskeyword(name) and not name.startswith("_")
    ]


def live_facts(text: str, namespace: Mapping[str, Any]) -> list[str]:
    """`name: description` of the live objects `text` mentions (the ghost text's safe rules)."""
    names = [name for name in mentioned(text) if name in namespace]
    return facts(names, dict(namespace)) if names else []


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


def project_definitions(
    text: str, namespace: Mapping[str, Any], roots: tuple[str, ...]
) -> list[Definition]:
    """The project's definitions of the names `text` mentions, found where the kernel got
    them; none without `roots`."""
    names = mentioned(text)
    found = [Origin(*o) for o in origins(names, dict(namespace))] if roots else []
    if not found:
        return []
    return _project(roots).definitions(None, [text], 0, None, found, focus=names)
