"""Which of the project's own definitions a notebook's prompt should show, most wanted first.

A name the notebook uses is traced to the file that defines it in two ways:
- the kernel's answer (`kernel_facts.origins`, after each execution): the file and qualified
  name of each imported function, class, module or class of an instance. It sees what static
  reading cannot (`sys.path` edits at run time, `%run`, editable installs) and wins;
- the notebook's own import statements, resolved against the notebook's directory, the
  server's root, its `src/` and literal `sys.path.insert/append` directories in the notebook.

The result is a list of `Definition`s the context builder fits into its budget. It depends
only on what stays put while the user types in a notebook's cell: the kernel's answer (changes
on an execution), the other cells, the names the current cell held when the cursor entered it
(`focus`) and the files' contents (a save); the cell being typed in is not read. In a `.py`
file (one cell) all but the cursor's line is read, so an Enter after an import may change it.
Ranking: names of the current cell first, then by the distance of the nearest cell that
mentions them, then the order of their imports.
"""

from __future__ import annotations

import ast
import posixpath
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .project_outline import Import, ProjectFiles

IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
ATTRIBUTE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
SYS_PATH = re.compile(
    r"""sys\.path\.(insert\(\s*-?\d+\s*,|append\()\s*[rR]?(["'])([^"'\n]+)\2\s*\)"""
)
MAGIC = ("%", "!")
MAX_DEFINITIONS = 40  # names traced per prompt
MAX_MODULE_NAMES = 12  # public names listed for a module the code uses as `module.`
MAX_REEXPORT_DEPTH = 3  # `from .core import f` in a package's __init__, followed this far
RESOLVED_TTL_S = 2.0  # where an import leads is looked up again after this long (new files)
TIME_BUDGET_S = 0.25  # a request stops reading new files after this long (the cache fills up)
UNMENTIONED = 1 << 30  # rank of a name imported but not used in any cell


@dataclass(frozen=True)
class Origin:
    """Where the kernel says a name comes from: `qualname` "" for a module."""

    name: str
    file: str
    qualname: str = ""


@dataclass(frozen=True)
class Definition:
    """A project definition as the prompt shows it: the file (relative to the root), then
    its lines (the signature, a docstring's first line, a class's fields and methods)."""

    name: str  # the name the document uses
    where: str
    lines: tuple[str, ...]


class ProjectContext:
    """The project's definitions for a document's names, read only through `files`."""

    def __init__(self, files: ProjectFiles, cache_size: int = 2048):
        self.files = files
        self._parsed = _Memo(cache_size)  # cell source -> (imports, sys.path dirs, names)
        # (import, search folders) -> (when to look again, file and qualname or None): most
        # imports are libraries that lead nowhere, and looking costs a few stats per folder.
        self._resolved = _Memo(cache_size)

    def definitions(
        self,
        path: str | None,
        sources: Sequence[str],
        index: int,
        cursor: int | None,
        origins: Iterable[Origin] = (),
        focus: Iterable[str] = (),
    ) -> list[Definition]:
        """The definitions for the names of a document (`sources`: its cells, a file being
        one cell; `path`: its path under the first root), with the cursor at `cursor` of
        `sources[index]` (None: the whole document counts, as for the magic and the fix),
        ranked as the module docstring says. New files are read for TIME_BUDGET_S at most (a
        cold start in a big project): what was read is cached, so a later request goes
        further, and until then its header may grow."""
        deadline = time.monotonic() + TIME_BUDGET_S
        root = self.files.roots[0]
        here = (root / path).parent if path else root
        is_module = bool(path) and path.endswith(".py")
        current = _without_typing(sources[index], cursor, is_module)
        parsed = [
            self._parsed.get(current if i == index else source, _parse)
            for i, source in enumerate(sources)
        ]
        targets = self._targets(parsed, origins, here, is_module, deadline)
        order = [name for name, homes in targets.items() if homes]
        rank = self._rank(order, parsed, index, set(focus))
        attributes = {
            (owner, attr) for p in parsed for owner, attr in p.attributes if owner in targets
        }
        shown: list[Definition] = []
        seen: set[tuple[Path, str]] = set()
        for name in sorted(order, key=rank)[:MAX_DEFINITIONS]:
            used = [attr for owner, attr in sorted(attributes) if owner == name]
            for home in targets[name]:
                if home in seen:
                    break
                # Past the time bound only what is already read is shown (no new reads).
                definition = self._show(name, *home, used, time.monotonic() < deadline)
                if definition is not None:
                    seen.add(home)
                    shown.append(definition)
                    break
        return shown

    def _targets(
        self, parsed, origins: Iterable[Origin], here: Path, is_module: bool, deadline: float
    ) -> dict[str, list[tuple[Path, str]]]:
        """Each name's possible homes (file, qualname), the kernel's first: a decorated
        function's origin may be its decorator's file, where the outline has no such name;
        its import still leads."""
        targets: dict[str, list[tuple[Path, str]]] = {}
        for origin in origins:
            (real,) = self._resolved.get(("origin", origin.file), self._allowed)
            if real is not None and origin.name not in targets:
                targets[origin.name] = [(real, origin.qualname)]
        # Python's order: folders put first on sys.path, the notebook's (the kernel's working
        # folder), then the root and its src/ (where a project's package usually lies), then
        # folders appended to sys.path.
        front = [here / d for p in reversed(parsed) for d in reversed(p.sys_path_front)]
        back = [here / d for p in parsed for d in p.sys_path_back]
        search = [*front, here, *self.files.roots, *(r / "src" for r in self.files.roots), *back]
        for p in reversed(parsed):  # a later cell's import wins, as it would when run
            for imp in p.imports:
                if imp.level and not is_module:
                    continue
                found = self._resolve_cached(imp, search, here, time.monotonic() < deadline)
                if found is not None and found not in targets.setdefault(imp.local, []):
                    targets[imp.local].append(found)
        return targets

    def _allowed(self, key: tuple[str, str]) -> tuple[Path | None]:
        return (self.files.allowed(key[1]),)

    def _rank(self, order: list[str], parsed, index: int, focus: set[str]):
        nearest: dict[str, int] = {}
        for i, p in enumerate(parsed):
            if i == index:
                continue
            for name in p.names & set(order):
                nearest[name] = min(nearest.get(name, UNMENTIONED), abs(i - index))
        position = {name: i for i, name in enumerate(order)}

        def rank(name: str) -> tuple[int, int]:
            return (0 if name in focus else 1 + nearest.get(name, UNMENTIONED), position[name])

        return rank

    def _show(
        self, name: str, file: Path, qualname: str, used: list[str], may_read: bool
    ) -> Definition | None:
        outline = self.files.outline(file, read=may_read)
        if outline is None:
            return None
        where = outline.where
        if outline.note:
            return Definition(name, where, (f"({outline.note})",))
        if not qualname:  # a module: the names the code uses first, as one-line signatures
            names = [
                *dict.fromkeys([n for n in used if n in outline.definitions] + outline.public())
            ][:MAX_MODULE_NAMES]
            lines = [_signature(outline.definitions[n]) for n in names]
            return Definition(name, where, tuple(lines)) if lines else None
        lines = outline.member(qualname)
        if lines is None:
            return None
        return Definition(name, where, tuple(lines))

    def _resolve_cached(self, imp: Import, search: list[Path], here: Path, may_read: bool):
        """`_resolve`, remembered for RESOLVED_TTL_S: an import's target is the same until a
        file appears or goes, and a saved file is still read anew (its outline is stamped).
        Without `may_read`, only what is remembered (past the request's time bound)."""
        key = (imp, tuple(search), here)
        now = time.monotonic()
        entry = self._resolved.peek(key)
        if entry is None or entry[0] < now:
            if not may_read:
                return entry[1] if entry else None
            entry = (now + RESOLVED_TTL_S, self._resolve(*key))
            self._resolved.put(key, entry)
        return entry[1]

    def _resolve(
        self, imp: Import, search: list[Path], here: Path, depth: int = 0
    ) -> tuple[Path, str] | None:
        """The file and qualified name an import binds, or None outside the project."""
        bases = [_up(here, imp.level)] if imp.level else search
        for base in bases:
            module = self._module_file(base, imp.module)
            if module is None:
                continue
            if imp.name is None:
                return module, ""
            outline = self.files.outline(module)
            if outline is None:
                return None
            if imp.name in outline.definitions or outline.note:
                return module, imp.name  # (a module too large to read: its note shows)
            if depth < MAX_REEXPORT_DEPTH:  # re-exported: `from .core import f` or `*`
                if imp.name in outline.imports:
                    again = outline.imports[imp.name]
                    return self._resolve(again, search, module.parent, depth + 1)
                for star in outline.star_imports:
                    again = Import(imp.local, star.module, imp.name, star.level)
                    if found := self._resolve(again, search, module.parent, depth + 1):
                        return found
            submodule = self._module_file(module.parent, imp.name)
            if module.name == "__init__.py" and submodule is not None:
                return submodule, ""
            return None
        return None

    def _module_file(self, base: Path, dotted: str) -> Path | None:
        parts = [p for p in dotted.split(".") if p]
        stem = base.joinpath(*parts)
        candidates = (
            [stem / "__init__.py"] if not parts else [stem.with_suffix(".py"), stem / "__init__.py"]
        )
        for candidate in candidates:
            real = self.files.allowed(candidate)
            if real is not None and real.is_file():
                return real
        return None


def _up(here: Path, level: int) -> Path:
    for _ in range(level - 1):
        here = here.parent
    return here


def _signature(lines: list[str]) -> str:
    """A definition's one line: its `def` or `class` line (or a constant)."""
    for line in lines:
        if not line.startswith("@"):
            return line.removesuffix(":") if line.startswith("class ") else line
    return lines[0]


@dataclass(frozen=True)
class _Parsed:
    imports: tuple[Import, ...]
    sys_path_front: tuple[str, ...]  # sys.path.insert(N, "...") folders, in order
    sys_path_back: tuple[str, ...]  # sys.path.append("...") folders
    names: frozenset[str]
    attributes: frozenset[tuple[str, str]]


def _parse(source: str) -> _Parsed:
    code = "\n".join(
        "" if line.lstrip().startswith(MAGIC) else line for line in source.splitlines()
    )
    try:
        statements = ast.parse(code).body
    except (SyntaxError, ValueError, RecursionError):  # a cell being typed: line by line
        statements = []
        for line in code.splitlines():
            if line.lstrip().startswith(("import ", "from ")):
                try:
                    statements.extend(ast.parse(line.strip()).body)
                except (SyntaxError, ValueError):
                    continue
    imports: list[Import] = []
    for node in statements:
        if isinstance(node, ast.ImportFrom):
            imports += [
                Import(a.asname or a.name, node.module or "", a.name, node.level)
                for a in node.names
                if a.name != "*"
            ]
        elif isinstance(node, ast.Import):
            imports += [
                Import(
                    a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0]
                )
                for a in node.names
            ]
    edits = [
        (m.group(1).startswith("insert"), posixpath.normpath(m.group(3)))
        for m in SYS_PATH.finditer(code)
    ]
    return _Parsed(
        tuple(imports),
        tuple(d for first, d in edits if first),
        tuple(d for first, d in edits if not first),
        frozenset(IDENTIFIER.findall(code)),
        frozenset(ATTRIBUTE.findall(code)),
    )


class _Memo:
    """A bounded, thread-safe memo: the newest `size` results of `compute(key)`."""

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, compute):
        with self._lock:
            if (value := self._items.get(key)) is not None:
                self._items.move_to_end(key)
                return value
        value = compute(key)
        self.put(key, value)
        return value

    def peek(self, key):
        with self._lock:
            return self._items.get(key)

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


def _without_typing(source: str, cursor: int | None, is_module: bool) -> str:
    """What of the current cell is read: nothing of a notebook's cell being typed in (its
    names come as `focus`), all but the cursor's line of a file (one cell), all of it without
    a cursor (the magic, the fix)."""
    if cursor is None:
        return source
    if not is_module:
        return ""
    line_start = source.rfind("\n", 0, cursor) + 1
    line_end = source.find("\n", cursor)
    return source[:line_start] + (source[line_end + 1 :] if line_end >= 0 else "")
