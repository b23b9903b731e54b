"""Project context for ghost text: does the prompt show the signature of the project function
or class the user is calling? Definition recall on real code, the time the project context
adds per keystroke, and the prompt cache's reuse while typing.

Projects: a few permissively licensed pure-Python projects (sdists fetched once with pip into
--cache, offline afterwards) and this repository's `jupyter_codestral`. A call site is a call
`name(` in one module of a project whose callee is a function or class defined at the top of
ANOTHER module of the same project and imported by name (`from .x import name`,
`from pkg.x import name`); up to --sites per project are sampled (--seed).

Each call site becomes the notebook the lab would see: `bench.ipynb` in the project's root,
cell 1 imports the callee as a user would (`from pkg.module import name`, the calling module's
import made absolute), cell 2 holds the calling function, split at the call's open
parenthesis (prefix: the function up to and including `(`; suffix: the rest of it). The
prompt is built as `LabPrompts.fim_context` builds it: ProjectContext(ProjectFiles([root])) ->
definitions(path, code cells, 1, cursor, origins, focus) -> ContextBuilder.build, `focus`
being the cell's names as the extension sends them (`namesToProbe`). "static": no kernel
origins (the notebook's import statements are resolved by reading files); "kernel": the
origin the kernel would report after running cell 1 (the defining file and the qualified
name; not measured in a real kernel here). "busy": cell 1 imports every project name the
calling code imports by name (the callee competes for the header's share); "`from pkg
import`": cell 1 imports the callee from the top package where that re-exports it. A call site
is recalled when the outline's `def` or `class` line of the callee is in the prompt's prefix;
the prompt is the second request's (the first may stop reading files after project_context's
TIME_BUDGET_S on a cold cache; how often it did is reported).

Keystrokes: for the first --timed sites per project, the 50 characters after `(` are typed
one by one (the text after them stays put, as the suffix does in real typing); per keystroke
the server's context time is measured with and without the project context (each with its
own warm token-count cache), and the prompt's FIM token ids are compared with the previous
keystroke's: the cache is reused when they share the previous prompt's start up to the typed
text. project_context's clock moves on --typing-ms per keystroke (its caches expire as they
would while a user types; the calls themselves run at full speed).

Usage: python bench/bench_project_context.py [--sites 200 --timed 10 --seed 22 --cache DIR]
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codestral_engine import codestral_tokenizer
from jupyter_codestral.context import project as project_context
from jupyter_codestral.context.notebook import Cell, ContextBuilder, TokenCounter
from jupyter_codestral.context.project import Import, Origin, ProjectContext
from jupyter_codestral.context.project_outline import (
    ProjectFiles,
    _class,
    _function,
    outline_source,
)

REPO = Path(__file__).resolve().parent.parent
PROJECTS = [  # name, version (sdists from PyPI)
    ("requests", "2.32.3"),
    ("rich", "13.9.4"),
    ("click", "8.1.7"),
    ("attrs", "24.2.0"),
]
NOT_PACKAGES = {"tests", "test", "docs", "doc", "examples", "benchmarks", "bench", "tools"}
NOTEBOOK = "bench.ipynb"  # in the project's root, as the lab's path says
BUDGETS = (2048, 4096, 8192)
KEYSTROKES = 50
IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")  # the extension's namesToProbe
MAX_FOCUS = 400


# --- Projects -------------------------------------------------------------------------------


def fetch(cache: Path, name: str, version: str) -> Path:
    """The unpacked sdist of `name==version` under `cache` (pip download once, then offline)."""
    root = cache / f"{name}-{version}"
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    archive = next(cache.glob(f"{name}-{version}.tar.gz"), None)
    if archive is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
                str(cache),
                f"{name}=={version}",
            ],
            check=True,
        )
        archive = next(cache.glob(f"{name}-{version}.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="data")
    return root


def licence(root: Path) -> str:
    info = root / "PKG-INFO"
    if not info.is_file():
        return "Apache-2.0 (pyproject.toml)" if root == REPO else "?"
    meta = email.parser.Parser().parsestr(info.read_text("utf-8"))
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    if meta.get("License") and len(meta["License"]) < 40:
        return meta["License"]
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return classifiers[0].split(" :: ")[-1] if classifiers else "?"


def packages(root: Path) -> list[Path]:
    found = []
    for base in (root / "src", root):
        if base.is_dir():
            found += [
                d
                for d in sorted(base.iterdir())
                if (d / "__init__.py").is_file() and d.name not in NOT_PACKAGES
            ]
    return found


# --- Ground truth: modules, their definitions and imports, read with ast --------------------


@dataclass
class Module:
    dotted: str
    path: Path
    tree: ast.Module
    lines: list[str]
    defs: dict[str, str] = field(default_factory=dict)  # name -> "def" / "class"
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local -> (module, name)
    stars: list[str] = field(default_factory=list)  # modules of `from m import *`
    guarded: set[str] = field(default_factory=set)  # imports inside a top-level if / try
    conditional: set[str] = field(default_factory=set)  # defined inside a top-level if / try
    package: str = ""  # what a relative import is relative to


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _top(body: list[ast.stmt], depth: int = 0):
    """(statement, inside an if/try) for a module's top-level statements."""
    for node in body:
        yield node, depth > 0
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # imports for the type checker only: not there at run time
        if isinstance(node, ast.If | ast.Try):
            handlers = [h.body for h in getattr(node, "handlers", [])]
            for part in [node.body, node.orelse, getattr(node, "finalbody", []), *handlers]:
                yield from _top(part, depth + 1)


def modules_of(package: Path) -> dict[str, Module]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        try:
            source = path.read_text("utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        module = Module(".".join(parts), path, tree, source.splitlines(keepends=True))
        package_name = (
            module.dotted if path.name == "__init__.py" else module.dotted.rpartition(".")[0]
        )
        for node, inside in _top(tree.body):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name not in module.defs:
                    module.defs[node.name] = "class" if isinstance(node, ast.ClassDef) else "def"
                    if inside:
                        module.conditional.add(node.name)
            elif isinstance(node, ast.ImportFrom):
                absolute = _absolute(node, package_name)
                for alias in node.names:
                    local = alias.asname or alias.name
                    if alias.name == "*":
                        module.stars.append(absolute)
                    elif local not in module.imports:
                        module.imports[local] = (absolute, alias.name)
                        if inside:
                            module.guarded.add(local)
        module.package = package_name
        found[module.dotted] = module
    return found


@dataclass(frozen=True)
class Truth:
    module: Module
    name: str
    hops: int  # re-exports between the imported module and the definition
    via: frozenset[str]  # "guarded import", "star import", "conditional definition"


def definer(modules: dict[str, Module], dotted: str, name: str, hops: int = 0) -> Truth | None:
    """Where `name`, imported from `dotted`, is defined (as Python would find it)."""
    module = modules.get(dotted)
    if module is None or hops > 10:
        return None
    if name in module.defs:
        via = {"conditional definition"} if name in module.conditional else set()
        return Truth(module, name, hops, frozenset(via))
    if name in module.imports:
        again = definer(modules, *module.imports[name], hops + 1)
        if again is not None:
            via = {"guarded import"} if name in module.guarded else set()
            return Truth(again.module, again.name, again.hops, again.via | via)
        return None
    for star in module.stars:
        again = definer(modules, star, name, hops + 1)
        if again is not None:
            return Truth(again.module, again.name, again.hops, again.via | {"star import"})
    return None


# --- Call sites ------------------------------------------------------------------------------


@dataclass
class Site:
    project: str
    root: Path
    caller: str  # module:function
    local: str  # the name the calling module uses
    import_line: str  # cell 1: the callee's import
    busy_line: str  # cell 1, busy: every project name the calling code imports by name
    package_line: str | None  # cell 1 as `from pkg import name` where the package exports it
    head: str  # cell 2 up to and including `(`
    rest: str  # cell 2 after `(`
    def_path: Path
    def_name: str
    kind: str
    truth: Truth


def _text(module: Module, node: ast.AST) -> tuple[str, list[int]]:
    """A function's lines, dedented by its own indentation, and each line's cut."""
    indent = node.col_offset
    lines = module.lines[node.lineno - 1 : node.end_lineno]
    cut = [min(indent, len(line) - len(line.lstrip(" \t"))) for line in lines]
    return "".join(line[c:] for line, c in zip(lines, cut, strict=True)), cut


def _offset(module: Module, func: ast.AST, call: ast.Call, cut: list[int]) -> int | None:
    """The offset, in the dedented function text, just after the call's `(`."""
    lines = module.lines[func.lineno - 1 : func.end_lineno]
    row = call.func.end_lineno - func.lineno
    byte_col = call.func.end_col_offset
    col = len(lines[row].encode("utf-8")[:byte_col].decode("utf-8", "replace")) - cut[row]
    offset = sum(len(line) - c for line, c in zip(lines[:row], cut[:row], strict=True)) + col
    text = "".join(line[c:] for line, c in zip(lines, cut, strict=True))
    while offset < len(text) and text[offset] in " \t":
        offset += 1
    return offset + 1 if text[offset : offset + 1] == "(" else None


class _Calls(ast.NodeVisitor):
    """Calls of a plain name inside functions, with the functions' own `from` imports."""

    def __init__(self, package: str):
        self.package = package
        self.stack: list[tuple[ast.AST, dict[str, tuple[str, str]]]] = []
        self.found: list[tuple[ast.AST, ast.Call, dict[str, tuple[str, str]]]] = []

    def visit_FunctionDef(self, node):
        local = dict(self.stack[-1][1]) if self.stack else {}
        for child in ast.walk(node):
            if isinstance(child, ast.ImportFrom):
                for alias in child.names:
                    if alias.name != "*":
                        local[alias.asname or alias.name] = (
                            _absolute(child, self.package), alias.name)  # fmt: skip
        self.stack.append((node, local))
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        if self.stack and isinstance(node.func, ast.Name):
            self.found.append((self.stack[-1][0], node, self.stack[-1][1]))
        self.generic_visit(node)


def _import_lines(names: dict[str, tuple[str, str]]) -> str:
    by_module: dict[str, list[str]] = {}
    for local, (module, name) in names.items():
        by_module.setdefault(module, []).append(name + (f" as {local}" if local != name else ""))
    return "".join(f"from {m} import {', '.join(n)}\n" for m, n in by_module.items())


def call_sites(project: str, root: Path, package_dirs: list[Path]) -> list[Site]:
    modules: dict[str, Module] = {}
    for package in package_dirs:
        modules.update(modules_of(package))
    sites = []
    for module in modules.values():
        visitor = _Calls(module.package)
        visitor.visit(module.tree)
        seen = set()
        for func, call, local_imports in visitor.found:
            local = call.func.id
            imports = {**module.imports, **local_imports}
            if local not in imports or (func, local) in seen:
                continue
            truth = definer(modules, *imports[local])
            if truth is None or truth.module is module:
                continue
            seen.add((func, local))
            text, cut = _text(module, func)
            offset = _offset(module, func, call, cut)
            if offset is None:
                continue
            top = imports[local][0].split(".")[0]
            public = definer(modules, top, imports[local][1])
            package_line = None
            if public is not None and (public.module, public.name) == (truth.module, truth.name):
                package_line = _import_lines({local: (top, imports[local][1])})
            project_names = {
                n: i
                for n, i in imports.items()
                if i[0].split(".")[0] in {m.split(".")[0] for m in modules}
            }
            sites.append(
                Site(
                    project,
                    root,
                    f"{module.dotted}:{func.name}",
                    local,
                    _import_lines({local: imports[local]}),
                    _import_lines(project_names),
                    package_line,
                    text[:offset],
                    text[offset:],
                    truth.module.path,
                    truth.name,
                    truth.module.defs[truth.name],
                    truth,
                )
            )
    return sites


# --- The prompt, as the lab builds it ---------------------------------------------------------


def focus_of(source: str) -> list[str]:
    names = dict.fromkeys(n for n in IDENTIFIER.findall(source) if not n.startswith("_"))
    return list(names)[:MAX_FOCUS]


def signature(site: Site) -> str:
    """The callee's `def` / `class` line as the outline shows it (for one defined inside a
    top-level if / try, which the outline skips: as it would show it), without `:` / `...`."""
    outline = outline_source(site.def_path.read_text("utf-8"), site.def_path)
    lines = outline.definitions.get(site.def_name)
    if lines is None:
        tree = ast.parse(site.def_path.read_text("utf-8"))
        node = next(n for n, _ in _top(tree.body) if getattr(n, "name", None) == site.def_name)
        lines = _class(node) if isinstance(node, ast.ClassDef) else _function(node, True)
    line = next(line for line in lines if not line.startswith("@"))
    return line.removesuffix(" ...").removesuffix(":")


def origins_of(site: Site) -> list[Origin]:
    return [Origin(site.local, str(site.def_path), site.def_name)]


@dataclass
class Result:
    site: Site
    recalled: dict[str, bool]
    reasons: dict[str, str] = field(default_factory=dict)  # variant -> why it missed
    details: dict[str, str] = field(default_factory=dict)
    cold_cut: dict[str, bool] = field(default_factory=dict)  # the first request showed fewer


def recall(site: Site, context: ProjectContext, builders: dict[int, ContextBuilder]) -> Result:
    wanted = signature(site)
    cursor = len(site.head)
    plain = [Cell("code", site.import_line), Cell("code", site.head + site.rest)]
    recalled = {"notebook only": wanted in builders[2048].build(plain, 1, cursor).prefix}
    result = Result(site, recalled)
    for cell, origins, label in (
        (site.import_line, (), "static"),
        (site.import_line, origins_of(site), "kernel"),
        (site.busy_line, (), "static, busy"),
        (site.package_line, (), "static, `from pkg import`"),
    ):
        if cell is None:
            continue
        cells = [Cell("code", cell), Cell("code", site.head + site.rest)]
        sources = [c.source for c in cells]
        focus = focus_of(sources[1])
        # The first request may stop reading files after TIME_BUDGET_S (a cold start); the
        # lab asks again on the next keystroke (and warms on entering the cell): measure that.
        cold = context.definitions(NOTEBOOK, sources, 1, cursor, origins, focus)
        definitions = context.definitions(NOTEBOOK, sources, 1, cursor, origins, focus)
        result.cold_cut[label] = len(cold) < len(definitions)
        for budget in BUDGETS:
            built = builders[budget].build(cells, 1, cursor, definitions=definitions)
            recalled[f"{label} {budget}"] = wanted in built.prefix
        if not recalled[f"{label} 2048"]:
            result.reasons[label], result.details[label] = why(
                site, context, definitions, builders[2048], wanted, bool(origins), cell
            )
    return result


def why(site, context, definitions, builder, wanted, kernel, cell) -> tuple[str, str]:
    """Why a prompt at 2048 misses the callee's signature, and a detail."""
    mine = [d for d in definitions if d.name == site.local]
    if not mine:
        root = context.files.roots[0]
        module, _, name = cell.strip().removeprefix("from ").partition(" import ")
        name = name.split(" as ")[0].strip()
        search = [root, *context.files.roots, *(r / "src" for r in context.files.roots)]
        found = context._resolve(Import(site.local, module, name), search, root)
        if kernel and "conditional definition" in site.truth.via:
            return "kernel origin given, but the outline lacks a definition inside if/try", ""
        if found is None:
            if site.truth.via:
                return "not resolved: " + " + ".join(sorted(site.truth.via)), ""
            return "not resolved: other", ""
        if (found[0], found[1]) != (site.def_path, site.def_name):
            where = f"{context.files.relative(found[0])}:{found[1] or '-'}"
            return "resolved elsewhere", where
        return "resolved, but not among the definitions", ""
    share = int(builder.budget * 0.25)
    header, _, shown = builder.project_header(mine, "#")
    if not shown:
        cost = sum(builder.count(f"# {line}\n") for line in mine[0].lines)
        return (
            f"budget: the {site.kind}'s outline alone is over the {share}-token share",
            f"{cost} tokens, {len(mine[0].lines)} lines",
        )
    if wanted not in header:
        return "shown, but a different definition or line", mine[0].lines[0][:60]
    return f"budget: definitions ranked before it fill the {share}-token share", ""


# --- Keystrokes: time and the prompt cache ---------------------------------------------------


def common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TypingClock:
    """`time` for project_context with `monotonic()` moved on by the typing pace per keystroke:
    its resolution cache expires as it would while a user types (calls run at real speed)."""

    def __init__(self):
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


CLOCK = TypingClock()


def keystrokes(site: Site, count, first: str, pace_s: float):
    """Per keystroke: (plain build ms, definitions + header ms, build with them ms, reuse of
    the previous prompt plain / with the project context: (shared its start?, share));
    `first`: cell 1."""
    tokenizer = codestral_tokenizer()
    files = ProjectFiles([site.root])
    context = ProjectContext(files)
    plain = ContextBuilder(TokenCounter(count))
    project = ContextBuilder(TokenCounter(count))
    typed, after = site.rest[:KEYSTROKES], site.rest[KEYSTROKES:]
    focus = focus_of(site.head + site.rest)  # the names when the cursor entered the cell

    def cells_at(k: int) -> tuple[list[Cell], int]:
        return [Cell("code", first), Cell("code", site.head + typed[:k] + after)], (
            len(site.head) + k
        )

    cells, cursor = cells_at(0)  # warm: the outlines, the header's token counts
    warm = context.definitions(NOTEBOOK, [c.source for c in cells], 1, cursor, (), focus)
    plain.build(cells, 1, cursor)
    project.build(cells, 1, cursor, definitions=warm)
    rows, previous = [], None
    for k in range(1, len(typed) + 1):
        CLOCK.offset += pace_s
        cells, cursor = cells_at(k)
        sources = [c.source for c in cells]
        times = {}
        for which in ("plain", "project") if k % 2 else ("project", "plain"):
            start = time.perf_counter()
            if which == "plain":
                built_plain = plain.build(cells, 1, cursor)
                times["plain"] = time.perf_counter() - start
            else:
                defs = context.definitions(NOTEBOOK, sources, 1, cursor, (), focus)
                project.project_header(defs, "#")
                middle = time.perf_counter()
                built_project = project.build(cells, 1, cursor, definitions=defs)
                times["defs"] = middle - start
                times["with"] = time.perf_counter() - middle
        prompts = {}
        for label, built in (("plain", built_plain), ("project", built_project)):
            ids = tokenizer.encode_fim(built.prefix, built.suffix)
            stable = tokenizer.encode_fim(built.prefix[: len(built.prefix) - k], built.suffix)
            prompts[label] = (ids, len(stable) - 1)  # `(` may merge with what follows
        reuse = {}
        if previous is not None:
            for label, (ids, _) in prompts.items():
                old, old_stable = previous[label]
                shared = common(old, ids)
                reuse[label] = (shared >= old_stable, shared / len(old))
        previous = prompts
        rows.append((times, reuse))
    return rows


def prefill_costs(budgets: tuple[int, ...], repeats: int) -> dict[int, float]:
    """Median cold prefill (time to the first token) of a prompt of each budget's size on
    bench_engine's model (torch backend): what a move to another cell costs at that budget."""
    import tempfile

    import codestral_engine
    from bench.bench_engine import BENCH_SHAPE, fim_prompt, ours
    from codestral_engine.weights.tiny import make_tiny

    model_dir = make_tiny(Path(tempfile.mkdtemp()) / "bench", "hf", seed=0, shape=BENCH_SHAPE)
    engine = codestral_engine.load(model_dir, "torch")
    costs = {}
    for budget in budgets:
        prefix, suffix = fim_prompt(engine, budget)
        times = []
        for _ in range(repeats):
            engine.prompt_cache.clear()
            times.append(ours(engine, prefix, suffix, 1)["ttft"])
        costs[budget] = statistics.median(times)
    return costs


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# --- Main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200, help="call sites per project")
    parser.add_argument("--timed", type=int, default=10, help="sites per project typed into")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache/jupyter-codestral/bench-projects"
    )
    parser.add_argument(
        "--typing-ms",
        type=float,
        default=200,
        help="time between keystrokes as project_context's clock sees it",
    )
    parser.add_argument("--examples", type=int, default=3, help="misses shown per reason")
    parser.add_argument(
        "--prefill-repeats",
        type=int,
        default=5,
        help="cold prefills per budget on the bench model (0: skip)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    project_context.time = CLOCK  # typing pace for its caches (see TypingClock)
    count = codestral_tokenizer().count
    projects = [(f"{n} {v}", fetch(args.cache, n, v)) for n, v in PROJECTS]
    projects.append(("jupyter_codestral (this repo)", REPO))
    rng = random.Random(args.seed)
    results: list[Result] = []
    timed: dict[str, list[tuple]] = {"one import": [], "busy": []}
    slowest: list[tuple[float, str]] = []
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for label, root in projects:
        dirs = [REPO / "jupyter_codestral"] if root == REPO else packages(root)
        sites = call_sites(label, root, dirs)
        sample = rng.sample(sites, min(args.sites, len(sites)))
        context = ProjectContext(ProjectFiles([root]))
        builders = {b: ContextBuilder(TokenCounter(count), budget=b) for b in BUDGETS}
        results += [recall(site, context, builders) for site in sample]
        for site in [s for s in sample if len(s.rest) >= KEYSTROKES][: args.timed]:
            for cell1, first in (("one import", site.import_line), ("busy", site.busy_line)):
                rows = keystrokes(site, count, first, args.typing_ms / 1000)
                timed[cell1] += rows
                defs_ms = statistics.median(t["defs"] for t, _ in rows) * 1000
                lines = (site.head + site.rest).count("\n")
                slowest.append((defs_ms, f"{cell1}: {site.caller} ({lines} lines)"))
        print(
            f"{label}: {licence(root)}; packages {', '.join(d.name for d in dirs)}; "
            f"{len(sites)} call sites, {len(sample)} sampled"
        )

    names = [label for label, _ in projects]
    variants = list(dict.fromkeys(v for r in results for v in r.recalled))
    print("\n| prompt | " + " | ".join(n.split(" (")[0] for n in names) + " | all |")
    print("|---|" + "---:|" * (len(names) + 1))
    for variant in variants:
        cells = []
        for group in [[r for r in results if r.site.project == n] for n in names] + [results]:
            group = [r for r in group if variant in r.recalled]
            hits = sum(r.recalled[variant] for r in group)
            cells.append(f"{100 * hits / len(group):.0f}% ({hits}/{len(group)})" if group else "-")
        print(f"| {variant} | " + " | ".join(cells) + " |")

    print("\ndistinct callees (static 2048): a callee counts as recalled where all its sites are")
    for name in names:
        group = [r for r in results if r.site.project == name]
        callees: dict[tuple, bool] = {}
        for r in group:
            key = (r.site.def_path, r.site.def_name)
            callees[key] = callees.get(key, True) and r.recalled["static 2048"]
        print(f"  {name}: {sum(callees.values())}/{len(callees)}")
    print("\nfirst (cold) request showed fewer definitions than the next (250 ms reading budget):")
    for variant in ("static", "kernel", "static, busy"):
        cut = sum(r.cold_cut.get(variant, False) for r in results)
        print(f"  {variant}: {cut} of {len(results)} sites")
    for variant in ("static", "kernel", "static, busy", "static, `from pkg import`"):
        misses = [r for r in results if variant in r.reasons]
        print(f"\nmisses, {variant} at 2048: {len(misses)} of {len(results)}")
        for reason, n in Counter(r.reasons[variant] for r in misses).most_common():
            print(f"  {n:4d}  {reason}")
            for r in [r for r in misses if r.reasons[variant] == reason][: args.examples]:
                s = r.site
                print(
                    f"          {s.project.split()[0]} {s.caller} -> {s.import_line.strip()}"
                    f" ({s.def_path.relative_to(s.root)}:{s.def_name}) "
                    f"{r.details[variant]}"
                )

    for cell1, rows in timed.items():
        plain = [t["plain"] * 1000 for t, _ in rows]
        defs = [t["defs"] * 1000 for t, _ in rows]
        with_ = [t["with"] * 1000 for t, _ in rows]
        added = [(t["defs"] + t["with"] - t["plain"]) * 1000 for t, _ in rows]
        print(
            f"\nkeystrokes, cell 1 {cell1}: {len(rows)} ({len(rows) // KEYSTROKES} sites x "
            f"{KEYSTROKES})"
        )
        for what, values in (
            ("build without project context", plain),
            ("definitions() + header render", defs),
            ("build with the definitions", with_),
            ("added: definitions + build with - build without", added),
        ):
            print(
                f"  {what}: p50 {percentile(values, 0.5):.3f} ms, "
                f"p95 {percentile(values, 0.95):.3f} ms"
            )
        for label in ("plain", "project"):
            pairs = [reuse[label] for _, reuse in rows if reuse]
            kept = sum(ok for ok, _ in pairs)
            print(
                f"  prompt cache, {label}: {kept}/{len(pairs)} keystrokes "
                f"({100 * kept / len(pairs):.1f}%) share the previous prompt's start; "
                f"mean share of the previous prompt's tokens "
                f"{statistics.mean(s for _, s in pairs):.3f}"
            )
    print("\nslowest sites, median definitions() + header (ms):")
    for ms, what in sorted(slowest, reverse=True)[:5]:
        print(f"  {ms:.2f}  {what}")
    if args.prefill_repeats:
        costs = prefill_costs(BUDGETS, args.prefill_repeats)
        print("\ncold prefill of a prompt of the budget's size (bench_engine's model, torch):")
        for budget, seconds in costs.items():
            print(f"  {budget}: {seconds * 1000:.0f} ms ({seconds / costs[BUDGETS[0]]:.2f}x)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
