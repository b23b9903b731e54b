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
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # a module over 1 MB is skipped (with a note): generated or data
MAX_CACHED_FILES = 512  # outlines kept (each a few KB of text at most)
MAX_VALUE_CHARS = 80  # a constant's value is cut after this many characters
MAX_METHODS = 20  # public methods listed per class
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
    definitions: dict[str, list[str]] = field(default_factory=dict)
    imports: dict[str, Import] = field(default_factory=dict)
    note: str = ""  # why the file was not outlined (too large)

    def public(self) -> list[str]:
        return [name for name in self.definitions if not name.startswith("_")]

    def member(self, qualname: str) -> list[str] | None:
        """The lines for `name` or `Class.method`."""
        head, _, rest = qualname.partition(".")
        lines = self.definitions.get(head)
        if lines is None or not rest:
            return lines
        wanted = f"def {rest.split('.')[0]}("
        found = [line.strip() for line in lines if line.strip().startswith(wanted)]
        return [lines[0], *[f"    {line}" for line in found]] if found else lines


class ProjectFiles:
    """Reads and outlines project files, only under `roots`."""

    def __init__(self, roots: Iterable[str | os.PathLike], max_bytes: int = MAX_FILE_BYTES):
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.max_bytes = max_bytes
        self._cache: OrderedDict[Path, tuple[tuple[int, int], Outline]] = OrderedDict()
        self._lock = threading.Lock()

    def allowed(self, path: str | os.PathLike) -> Path | None:
        """The real path of `path` when it may be read: under a root, in no site-packages."""
        real = Path(os.path.realpath(path))
        if any(part in NOT_PROJECT for part in real.parts):
            return None
        if any(real.is_relative_to(root) for root in self.roots):
            return real
        return None

    def relative(self, path: Path) -> str:
        """How the header names a file: relative to the root it lies under."""
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name

    def outline(self, path: str | os.PathLike) -> Outline | None:
        """The outline of a Python file, None when it is not there or may not be read."""
        real = self.allowed(path)
        if real is None:
            return None
        try:
            stat = real.stat()
        except OSError:
            return None
        if not real.is_file():
            return None
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(real)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(real)
                return cached[1]
        outline = self._read(real, stat.st_size)
        with self._lock:
            self._cache[real] = (stamp, outline)
            self._cache.move_to_end(real)
            while len(self._cache) > MAX_CACHED_FILES:
                self._cache.popitem(last=False)
        return outline

    def _read(self, path: Path, size: int) -> Outline:
        name = self.relative(path)
        if size > self.max_bytes:
            note = f"{name} not read: {size / (1 << 20):.1f} MB, over {self.max_bytes >> 20} MB"
            return Outline(path, note=note)
        try:
            data = path.read_bytes()[: self.max_bytes + 1]  # it may have grown since the stat
            if b"\0" in data or len(data) > self.max_bytes:
                return Outline(path)  # binary (or grown past the bound): nothing to show
            return outline_source(data.decode("utf-8"), path)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
            return Outline(path)  # not UTF-8, or being edited: nothing until it parses


def outline_source(source: str, path: Path = Path("<source>")) -> Outline:
    """The outline of Python `source` (raises SyntaxError when it does not parse)."""
    tree = ast.parse(source)
    outline = Outline(path)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            outline.definitions[node.name] = _function(node, docstring=True)
        elif isinstance(node, ast.ClassDef):
            outline.definitions[node.name] = _class(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target, line in _constants(node):
                outline.definitions[target] = [line]
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    local = alias.asname or alias.name
                    outline.imports[local] = Import(
                        local, node.module or "", alias.name, node.level
                    )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                module = alias.name if alias.asname else local  # `import a.b` binds `a`
                outline.imports[local] = Import(local, module)
    return outline


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
            text += f" = {_short(ast.unparse(default))}" if arg.annotation else (
                f"={_short(ast.unparse(default))}")  # fmt: skip
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
    bases = [ast.unparse(b) for b in [*node.bases, *node.keywords]]
    head = f"class {node.name}({', '.join(bases)}):" if bases else f"class {node.name}:"
    decorators = [f"@{ast.unparse(d)}" for d in node.decorator_list if _name(d) in _FIELDS]
    lines = [*decorators, head]
    doc = ast.get_docstring(node)
    if doc and (first := doc.strip().splitlines()[0].strip()):
        lines.append(f'    """{first}"""')
    methods = 0
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            value = f" = {_short(ast.unparse(item.value))}" if item.value else ""
            lines.append(f"    {item.target.id}: {ast.unparse(item.annotation)}{value}")
        elif isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            public = not item.name.startswith("_") or item.name in ("__init__", "__call__")
            if public and methods < MAX_METHODS:
                lines.extend(f"    {line}" for line in _function(item, docstring=False))
                methods += 1
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
