"""The outline of one project source file, read with `ast` (never imported, never run): the
signatures of its functions and classes, its constants and what it imports, for the context
header of ghost text, the magic and the fix.

`ProjectFiles` is the only way project files are read: a file is read only when its real path
(symlinks resolved) lies under one of the roots (the Jupyter server's root and the directories
an admin lists), outside any site-packages, within a size bound, and as UTF-8 text. Outlines
are cached by path, size and modification time, within a bound on their number.
"""

from __future__ import annotations

import ast
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 512 << 10  # a module over 512 KB is skipped (with a note): generated or
# data, and ast takes about a second per MB, on the thread every suggestion waits for
MAX_CACHED_FILES = 256  # outlines kept (a typical one is a few KB; the largest, ~100 KB)
MAX_VALUE_CHARS = 80  # a constant's value is cut after this many characters
MAX_METHODS = 20  # public methods listed per class
REAL_PATH_TTL_S = 2.0  # a path's real path is looked up again after this long
NOT_PROJECT = ("site-packages", "dist-packages")  # installed packages: the model knows them


@dataclass(frozen=True)
class Import:
    """`from module import name as local` (`name` None: `import module as local`)."""

    local: str
    module: str  # dotted, without the leading dots of a relative import
    name: str | None = None
    level: int = 0  # leading dots


@dataclass
class Outline:
    """What a module defines at its top level, each definition as the lines that show it."""

    path: Path
    where: str = ""  # the path as the header shows it (relative to its root)
    definitions: dict[str, list[str]] = field(default_factory=dict)
    imports: dict[str, Import] = field(default_factory=dict)
    star_imports: list[Import] = field(default_factory=list)  # `from .core import *`
    note: str = ""  # why the file was not outlined (too large)

    def public(self) -> list[str]:
        return [name for name in self.definitions if not name.startswith("_")]

    def member(self, qualname: str) -> list[str] | None:
        """The lines for `name` or `Class.method`."""
        head, _, rest = qualname.partition(".")
        lines = self.definitions.get(head)
        if lines is None or not rest:
            return lines
        wanted = (f"def {rest}(", f"async def {rest}(")
        found = [line.strip() for line in lines if line.strip().startswith(wanted)]
        heading = next(line for line in lines if not line.startswith("@"))
        return [heading, *[f"    {line}" for line in found]] if found else None


class ProjectFiles:
    """Reads and outlines project files, only under `roots`."""

    def __init__(self, roots: Iterable[str | os.PathLike], max_bytes: int = MAX_FILE_BYTES):
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.max_bytes = max_bytes
        self._cache: OrderedDict[Path, tuple[tuple[int, int], Outline]] = OrderedDict()
        self._real: OrderedDict[str, tuple[float, Path | None]] = OrderedDict()
        self._lock = threading.Lock()

    def allowed(self, path: str | os.PathLike) -> Path | None:
        """The real path of `path` when it may be read: under a root, in no site-packages.
        Remembered for REAL_PATH_TTL_S (a path resolves the same until a link changes); a
        read checks again, so a stale answer never leads out of the roots."""
        key, now = os.fspath(path), time.monotonic()
        with self._lock:
            known = self._real.get(key)
        if known is not None and known[0] > now:
            return known[1]
        real: Path | None = Path(os.path.realpath(path))
        if not self._under_roots(real):
            real = None
        with self._lock:
            self._real[key] = (now + REAL_PATH_TTL_S, real)
            self._real.move_to_end(key)
            if len(self._real) > 4 * MAX_CACHED_FILES:
                self._real.popitem(last=False)
        return real

    def _under_roots(self, real: Path) -> bool:
        if any(part in NOT_PROJECT for part in real.parts):
            return False
        return any(real.is_relative_to(root) for root in self.roots)

    def relative(self, path: Path) -> str:
        """How the header names a file: relative to the root it lies under."""
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name

    def outline(self, path: str | os.PathLike, read: bool = True) -> Outline | None:
        """The outline of a Python file, None when it is not there or may not be read (or,
        without `read`, when it would have to be read anew)."""
        real = self.allowed(path)
        if real is None:
            return None
        try:
            info = real.stat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        stamp = (info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(real)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(real)
                return cached[1]
        if not read:
            return None
        outline = self._read(real, info.st_size)
        with self._lock:
            self._cache[real] = (stamp, outline)
            self._cache.move_to_end(real)
            while len(self._cache) > MAX_CACHED_FILES:
                self._cache.popitem(last=False)
        return outline

    def _read(self, path: Path, size: int) -> Outline:
        name = self.relative(path)
        if size > self.max_bytes:
            limit = self.max_bytes / (1 << 20)
            note = f"{name} not read: {size / (1 << 20):.1f} MB, over {limit:g} MB"
            return Outline(path, name, note=note)
        try:
            data = self._read_checked(path)
            if data is None or b"\0" in data or len(data) > self.max_bytes:
                return Outline(path, name)  # moved, binary or grown: nothing to show
            return outline_source(data.decode("utf-8"), path, name)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
            return Outline(path, name)  # not UTF-8, or being edited: nothing until it parses

    def _read_checked(self, path: Path) -> bytes | None:
        """The file's bytes (up to the bound and one more), if what was opened is a regular
        file whose real path, resolved again now, is still under a root: a link swapped in
        since `allowed` looked (its answer is remembered) is never followed out."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in does not block
        with os.fdopen(fd, "rb") as file:
            opened = os.fstat(file.fileno())
            real = os.path.realpath(path)
            if not stat.S_ISREG(opened.st_mode) or not self._under_roots(Path(real)):
                return None
            now = os.stat(real)
            if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
                return None
            return file.read(self.max_bytes + 1)


def outline_source(source: str, path: Path = Path("<source>"), where: str = "") -> Outline:
    """The outline of Python `source` (raises SyntaxError when it does not parse). Top-level
    statements are read, and those inside top-level `if`, `try` and `with` blocks (a
    definition per platform or Python version): the first one of a name wins."""
    outline = Outline(path, where or path.name)
    for node in _top_level(ast.parse(source).body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            outline.definitions.setdefault(node.name, _function(node, docstring=True))
        elif isinstance(node, ast.ClassDef):
            outline.definitions.setdefault(node.name, _class(node))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target, line in _constants(node):
                outline.definitions.setdefault(target, [line])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    outline.star_imports.append(Import("*", node.module or "", "*", node.level))
                else:
                    local = alias.asname or alias.name
                    outline.imports.setdefault(
                        local, Import(local, node.module or "", alias.name, node.level)
                    )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                module = alias.name if alias.asname else local  # `import a.b` binds `a`
                outline.imports.setdefault(local, Import(local, module))
    return outline


_TRY = (ast.Try, ast.TryStar) if hasattr(ast, "TryStar") else (ast.Try,)  # 3.11: except*


def _top_level(body: list[ast.stmt]):
    """The statements of a module's body, with those of its compound blocks in order."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.With):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
        elif isinstance(node, _TRY):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _top_level(part)


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, docstring: bool) -> list[str]:
    keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    lines = [f"{keyword} {node.name}({_parameters(node.args)}){returns}: ..."]
    decorators = {_name(d) for d in node.decorator_list}
    for kind in ("property", "staticmethod", "classmethod"):
        if kind in decorators:
            lines.insert(0, f"@{kind}")
    doc = ast.get_docstring(node) if docstring else None
    if doc and (first := doc.strip().splitlines()[0].strip()):
        lines[-1] = lines[-1].removesuffix(" ...")
        lines.append(f'    """{first}"""')
    return lines


def _parameters(args: ast.arguments) -> str:
    """Parameters as PEP 8 writes them (`window: int = 7`; ast.unparse drops the spaces)."""

    def one(arg: ast.arg, default: ast.expr | None, star: str = "") -> str:
        text = star + arg.arg + (f": {ast.unparse(arg.annotation)}" if arg.annotation else "")
        if default is not None:
            text += (
                f" = {_short(ast.unparse(default))}"
                if arg.annotation
                else (f"={_short(ast.unparse(default))}")
            )
        return text

    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parts = [one(a, d) for a, d in zip(positional, defaults, strict=True)]
    if args.posonlyargs:
        parts.insert(len(args.posonlyargs), "/")
    if args.vararg:
        parts.append(one(args.vararg, None, "*"))
    elif args.kwonlyargs:
        parts.append("*")
    parts += [one(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg:
        parts.append(one(args.kwarg, None, "**"))
    return ", ".join(parts)


def _class(node: ast.ClassDef) -> list[str]:
    """Decorators that make fields, the `class` line, the docstring's first line, the fields,
    then `__init__` and the public methods: the most wanted first, so that a class cut to fit
    a budget keeps what a call needs."""
    bases = [ast.unparse(b) for b in [*node.bases, *node.keywords]]
    head = f"class {node.name}({', '.join(bases)}):" if bases else f"class {node.name}:"
    decorators = [f"@{ast.unparse(d)}" for d in node.decorator_list if _name(d) in _FIELDS]
    lines = [*decorators, head]
    doc = ast.get_docstring(node)
    if doc and (first := doc.strip().splitlines()[0].strip()):
        lines.append(f'    """{first}"""')
    methods = [
        item
        for item in node.body
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
        and (not item.name.startswith("_") or item.name in ("__init__", "__call__"))
    ]
    methods.sort(key=lambda item: item.name != "__init__")  # stable: source order otherwise
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            value = f" = {_short(ast.unparse(item.value))}" if item.value else ""
            lines.append(f"    {item.target.id}: {ast.unparse(item.annotation)}{value}")
    for item in methods[:MAX_METHODS]:
        lines.extend(f"    {line}" for line in _function(item, docstring=False))
    if len(lines) == len(decorators) + 1:
        lines[-1] += " ..."
    return lines


_FIELDS = {"dataclass", "dataclasses.dataclass", "attr.s", "attrs.define", "define", "frozen"}


def _constants(node: ast.Assign | ast.AnnAssign):
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if node.value is None:
        return
    value = _short(ast.unparse(node.value))
    for target in targets:
        if isinstance(target, ast.Name):
            annotation = (
                f": {ast.unparse(node.annotation)}" if isinstance(node, ast.AnnAssign) else ""
            )
            yield target.id, f"{target.id}{annotation} = {value}"


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    return ast.unparse(node)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
