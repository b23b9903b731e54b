"""The project context: signatures read with `ast` from the project's own files (never
imported), found through the kernel's answer or the notebook's imports, read only under the
roots, ranked and fitted into the prompt's header without moving while the user types."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from jupyter_codestral.context.notebook import PROJECT_SHARE, Cell, ContextBuilder
from jupyter_codestral.context.project import Origin, ProjectContext
from jupyter_codestral.context.project_outline import ProjectFiles, outline_source

FEATURES = '''
"""Feature engineering for the shop."""
from dataclasses import dataclass

import pandas as pd

WINDOW_DAYS = 28


def build_features(frame: pd.DataFrame, window: int = 7, *, dropna: bool = True) -> pd.DataFrame:
    """Rolling means of every numeric column.

    More text that the prompt does not need.
    """
    return frame


def _private_helper(x):
    return x


@dataclass
class Scaler:
    """Standardises columns."""

    mean: float = 0.0
    std: float = 1.0

    def __init__(self, mean=0.0, std=1.0, clip: float | None = None):
        self.mean = mean

    def fit(self, frame, columns: list[str] | None = None) -> "Scaler":
        return self

    @property
    def ready(self) -> bool:
        return True

    def _internal(self):
        pass
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def shown(definitions) -> str:
    return "\n".join(line for d in definitions for line in (d.where, *d.lines))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / "analysis" / "features.py", FEATURES)
    return root


def context(root: Path, *extra: Path) -> ProjectContext:
    return ProjectContext(ProjectFiles([root, *extra]))


def test_the_outline_shows_signatures_as_written():
    outline = outline_source(FEATURES)
    function = "\n".join(outline.definitions["build_features"])
    assert (
        "def build_features(frame: pd.DataFrame, window: int = 7, *, dropna: bool = True)"
        " -> pd.DataFrame:"
    ) in function
    assert '"""Rolling means of every numeric column."""' in function
    assert "More text" not in function
    scaler = "\n".join(outline.definitions["Scaler"])
    assert scaler.startswith("@dataclass\nclass Scaler:")
    assert "mean: float = 0.0" in scaler and "std: float = 1.0" in scaler
    assert "def __init__(self, mean=0.0, std=1.0, clip: float | None = None)" in scaler
    assert "def fit(self, frame, columns: list[str] | None = None) -> 'Scaler'" in scaler
    assert "@property" in scaler and "def ready(self) -> bool" in scaler
    assert "_internal" not in scaler
    assert outline.definitions["WINDOW_DAYS"] == ["WINDOW_DAYS = 28"]
    assert "_private_helper" not in outline.public()


def test_a_module_beside_a_notebook_that_never_ran(root):
    cells = ["from features import build_features, Scaler", "out = build_features(", ""]
    found = context(root).definitions("analysis/explore.ipynb", cells, 1, 21)
    text = shown(found)
    assert "analysis/features.py" in text
    assert "window: int = 7, *, dropna: bool = True" in text
    assert "def fit(self, frame, columns" in text  # a class's methods


def test_a_src_package_and_its_reexports(root):
    write(root / "src" / "shop" / "__init__.py", "from .pricing import net_price\n")
    write(root / "src" / "shop" / "pricing.py", "def net_price(gross, vat_rate=0.2):\n    ...\n")
    cells = ["from shop import net_price\nimport shop.pricing as pricing", "pricing."]
    text = shown(context(root).definitions("notebooks/a.ipynb", cells, 1, 8))
    assert "src/shop/pricing.py" in text
    assert "def net_price(gross, vat_rate=0.2)" in text


def test_literal_sys_path_edits_and_the_kernels_answer(root, tmp_path):
    write(root / "lib" / "geo.py", "def haversine(a, b, radius_km=6371.0):\n    ...\n")
    cells = ["import sys\nsys.path.insert(0, '../lib')\nfrom geo import haversine", "haversine("]
    text = shown(context(root).definitions("analysis/nb.ipynb", cells, 1, 10))
    assert "radius_km=6371.0" in text
    # A path computed at run time: only the kernel knows; its answer wins over imports.
    write(root / "deep" / "geo2.py", "def haversine(a, b, earth='wgs84'):\n    ...\n")
    origin = Origin("haversine", str(root / "deep" / "geo2.py"), "haversine")
    text = shown(context(root).definitions("analysis/nb.ipynb", cells, 1, 10, [origin]))
    assert "earth='wgs84'" in text and "radius_km" not in text


def test_class_members_from_the_kernel(root):
    origin = Origin("scaler", str(root / "analysis" / "features.py"), "Scaler")
    text = shown(context(root).definitions(None, ["scaler.fit("], 0, 11, [origin]))
    assert "class Scaler:" in text and "def fit(self, frame" in text


def test_nothing_outside_the_roots_is_read(root, tmp_path):
    outside = write(tmp_path / "elsewhere" / "secret.py", "def leaked_secret(token='abc'): ...\n")
    os.symlink(outside, root / "analysis" / "linked.py")
    cells = ["from linked import leaked_secret", "leaked_secret("]
    project = context(root)
    assert project.definitions("analysis/nb.ipynb", cells, 1, 14) == []
    origin = Origin("leaked_secret", str(outside), "leaked_secret")  # a kernel's answer
    assert project.definitions("analysis/nb.ipynb", cells, 1, 14, [origin]) == []
    # A document path out of the root: its folder is searched, and still nothing is read.
    assert project.definitions("../elsewhere/nb.ipynb", cells, 1, 14) == []
    # An admin's extra directory is a root too.
    text = shown(context(root, tmp_path / "elsewhere").definitions(None, cells, 1, 14, [origin]))
    assert "token='abc'" in text


def test_installed_packages_are_not_the_project(root):
    write(root / ".venv" / "lib" / "site-packages" / "pkg.py", "def installed(a): ...\n")
    origin = Origin("installed", str(root / ".venv/lib/site-packages/pkg.py"), "installed")
    assert context(root).definitions(None, ["installed("], 0, 10, [origin]) == []


def test_large_binary_and_undecodable_files(root):
    big = root / "analysis" / "generated.py"
    big.write_text("def huge(): ...\n" + "# padding\n" * ((5 << 20) // 10))  # 5 MB
    (root / "analysis" / "latin.py").write_bytes("def café(x): ...\n".encode("latin-1"))
    (root / "analysis" / "blob.py").write_bytes(b"def blob(): ...\n\0\0")
    cells = ["from generated import huge\nfrom latin import café\nfrom blob import blob", "h"]
    found = context(root).definitions("analysis/nb.ipynb", cells, 1, 1)
    notes = [d.lines for d in found]
    assert notes == [("(analysis/generated.py not read: 5.0 MB, over 0.5 MB)",)], notes


def test_a_save_changes_the_definition(root):
    project = context(root)
    cells = ["from features import build_features", "build_features("]
    before = shown(project.definitions("analysis/nb.ipynb", cells, 1, 15))
    module = root / "analysis" / "features.py"
    module.write_text(module.read_text().replace("window: int = 7", "window: int = 14"))
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 10**9))
    after = shown(project.definitions("analysis/nb.ipynb", cells, 1, 15))
    assert "window: int = 7" in before and "window: int = 14" in after


def test_ranking_current_cell_first_then_nearest_and_the_cell_typed_in_left_out(root):
    write(root / "analysis" / "more.py", "def alpha(a): ...\ndef beta(b): ...\ndef gamma(c): ...\n")
    cells = ["from more import alpha, beta, gamma", "beta(1)", "x = 1", "alpha(2)\ngam"]
    project = context(root)
    order = [d.name for d in project.definitions("analysis/nb.ipynb", cells, 3, 12, focus=[])]
    assert order == ["beta", "alpha", "gamma"]  # beta's cell is nearest; gamma unused
    focused = project.definitions("analysis/nb.ipynb", cells, 3, 12, focus=["gamma"])
    assert [d.name for d in focused] == ["gamma", "beta", "alpha"]
    # The notebook's cell being typed in is not read (its names come as focus): Enter, moving
    # the cursor or finishing a statement there never changes the header.
    typing = ["x = 1", "from more import alpha\nmore.alpha(\nfrom features import build_fe"]
    for cursor in (10, 34, len(typing[1])):
        assert project.definitions("analysis/nb.ipynb", typing, 1, cursor) == []
    # A .py file is one cell: all of it but the line being typed.
    file = ["from more import alpha\nfrom features import build_fe"]
    assert [d.name for d in project.definitions("analysis/mod.py", file, 0, 50)] == ["alpha"]
    # The magic and the fix (no cursor) read the whole cell.
    assert [d.name for d in project.definitions("analysis/nb.ipynb", typing, 1, None)] == ["alpha"]


def test_the_header_stays_put_while_typing(root):
    project = context(root)
    builder = ContextBuilder(lambda text: len(text) // 3 + 1, budget=2048)
    cells = ["from features import Scaler, build_features", "df = load()", ""]
    prefixes = []
    for typed in ["o", "out = ", "out = build_", "out = build_features(df, "]:
        cells[2] = typed
        found = project.definitions("analysis/nb.ipynb", cells, 2, len(typed), focus=[])
        context_ = builder.build([Cell("code", c) for c in cells], 2, len(typed), definitions=found)
        assert context_.definitions == 2
        prefixes.append(context_.prefix)
    header = prefixes[0].split("\n\n")[0]
    assert header.startswith("# From the project's own files:\n# analysis/features.py:\n")
    assert "# def build_features(frame: pd.DataFrame, window: int = 7" in header
    assert all(p.startswith(prefixes[0][: -len("o")]) for p in prefixes)


def test_the_header_keeps_to_its_share_of_the_budget(root):
    many = "".join(f"def function_{i}(argument_{i}, option_{i}=None): ...\n" for i in range(60))
    write(root / "analysis" / "wide.py", many)
    cells = ["import wide", "wide."]
    found = context(root).definitions("analysis/nb.ipynb", cells, 1, 5)
    count = lambda text: len(text) // 3 + 1  # noqa: E731
    roomy = ContextBuilder(count, budget=4096)
    built = roomy.build([Cell("code", c) for c in cells], 1, 5, definitions=found)
    assert built.definitions == 1 and "def function_11(" in built.prefix
    assert "function_12(" not in built.prefix  # a module lists at most a dozen names
    # Too big for a small budget's share: cut after what fits, and marked.
    small = ContextBuilder(count, budget=512)
    header, used, shown = small.project_header(found, "#")
    assert shown == 1 and used <= 512 * PROJECT_SHARE
    assert "# def function_0(" in header and header.endswith("#     ...\n\n")
    assert "function_11(" not in header


def test_a_class_too_big_for_the_share_keeps_its_head_and_init(root):
    methods = "".join(f"    def method_{i}(self, value_{i}=None): ...\n" for i in range(19))
    init = "    def __init__(self, size=3): ...\n"
    write(root / "analysis" / "big.py", f"class Big:\n{methods}{init}")
    found = context(root).definitions("analysis/nb.ipynb", ["from big import Big", "Big("], 1, 4)
    header, _, shown = ContextBuilder(len, budget=1024).project_header(found, "#")
    assert shown == 1
    assert "# class Big:\n#     def __init__(self, size=3): ...\n#     def method_0(" in header
    assert "method_18" not in header and header.endswith("#     ...\n\n")


def test_reading_stops_at_the_time_bound(root, monkeypatch):
    from jupyter_codestral.context import project as project_context

    cells = ["from features import build_features", "build_features("]
    monkeypatch.setattr(project_context, "TIME_BUDGET_S", 0.0)
    assert context(root).definitions("analysis/nb.ipynb", cells, 1, 15) == []
    monkeypatch.setattr(project_context, "TIME_BUDGET_S", 5.0)
    assert context(root).definitions("analysis/nb.ipynb", cells, 1, 15) != []


def test_conditional_definitions_star_reexports_and_a_decorators_file(root):
    write(root / "src" / "kit" / "__init__.py", "from .core import *\n")
    write(
        root / "src" / "kit" / "deco.py",
        "def traced(f):\n    def wrapper(*a, **k): ...\n    return wrapper\n",
    )
    write(
        root / "src" / "kit" / "core.py",
        textwrap.dedent("""
        import sys
        from .deco import traced
        if sys.platform == "win32":
            def console(width=80, *, colour=False): ...
        else:
            def console(width=120, *, colour=True): ...
        try:
            from fast import parse
        except ImportError:
            def parse(text, strict=True): ...
        @traced
        def fetch(url, timeout=30): ...
    """),
    )
    cells = ["from kit import console, parse, fetch", "fetch("]
    # functools.wraps copies the name, not the file: the kernel names the decorator's file,
    # where there is no `fetch`; the import still leads to it.
    origin = Origin("fetch", str(root / "src" / "kit" / "deco.py"), "fetch")
    text = shown(context(root).definitions("nb.ipynb", cells, 1, 6, [origin]))
    assert "def console(width=80, *, colour=False)" in text  # the first definition
    assert "def parse(text, strict=True)" in text
    assert "def fetch(url, timeout=30)" in text


def test_folders_put_first_on_sys_path_win_as_they_would_in_python(root):
    write(root / "analysis" / "geo.py", "def area(shape, unit='m2'): ...\n")
    write(root / "vendor" / "geo.py", "def area(shape, unit='km2'): ...\n")
    first = ["import sys\nsys.path.insert(0, '../vendor')\nfrom geo import area", "area("]
    text = shown(context(root).definitions("analysis/nb.ipynb", first, 1, 5))
    assert "unit='km2'" in text and "unit='m2'" not in text
    last = ["import sys\nsys.path.append('../vendor')\nfrom geo import area", "area("]
    assert "unit='m2'" in shown(context(root).definitions("analysis/nb.ipynb", last, 1, 5))


def test_a_folder_swapped_for_a_link_out_of_the_root_is_not_followed(root, tmp_path):
    files = ProjectFiles([root])
    module = root / "analysis" / "features.py"
    assert "build_features" in files.outline(module).definitions
    outside = write(tmp_path / "outside" / "features.py", "SECRET = 'never read'\n")
    (root / "analysis").rename(root / "moved")
    os.symlink(outside.parent, root / "analysis")  # within the remembered real path's TTL
    outline = files.outline(module)
    assert outline is None or "SECRET" not in outline.definitions
