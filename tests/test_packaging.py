"""Both packages import from the editable install and from a built wheel; rooms keep their rules."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine" / "codestral_engine"
JUPYTER = ROOT / "jupyter_codestral"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def where_imported(cwd: Path, extra_path: Path | None = None) -> str:
    env = {"PYTHONPATH": str(extra_path)} if extra_path else {}
    code = "import codestral_engine, jupyter_codestral; print(codestral_engine.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


# The build hook runs jlpm (from the environment's jupyterlab) when the extension is stale.
VENV_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_editable_install_imports_both_packages(tmp_path):
    assert where_imported(tmp_path).startswith(str(ENGINE))


def test_built_wheel_holds_and_imports_both_packages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        env=VENV_ENV,
    )
    wheel = next((tmp_path / "dist").glob("jupyter_codestral-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "codestral_engine/__init__.py" in names
    assert "codestral_engine/backends/mlx.py" in names
    assert "jupyter_codestral/__init__.py" in names
    assert not any(n.startswith(("tests/", "engine/")) for n in names)
    data = "jupyter_codestral-0.1.0.data/data/"
    # The prebuilt JupyterLab extension and the server extension's enabling config.
    assert f"{data}share/jupyter/labextensions/jupyter-codestral/package.json" in names
    assert any(
        n.startswith(f"{data}share/jupyter/labextensions/jupyter-codestral/static/") for n in names
    )
    assert f"{data}etc/jupyter/jupyter_server_config.d/jupyter_codestral.json" in names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    assert where_imported(tmp_path, extra_path=target).startswith(str(target))


def test_engine_knows_nothing_of_jupyter():
    forbidden = {"IPython", "ipykernel", "jupyter_server", "jupyter_client", "notebook", "tornado"}
    for path in ENGINE.rglob("*.py"):
        assert not imported_modules(path) & forbidden, path


def test_only_backend_modules_import_mlx_or_torch():
    allowed = {
        ENGINE / "backends" / "mlx.py": {"mlx", "mlx_lm"},
        ENGINE / "backends" / "mlx_convert.py": {"mlx_lm"},
        ENGINE / "backends" / "torch.py": {"torch"},
        ENGINE / "backends" / "torch_cache.py": {"torch"},
        ENGINE / "backends" / "torch_model.py": {"torch"},
        ENGINE / "backends" / "torch_quant.py": {"torch"},
        ENGINE / "backends" / "torch_weights.py": {"torch"},
        ENGINE / "weights" / "tiny.py": {"mlx"},  # writes tiny models; imported when it does
    }
    for path in [*ENGINE.rglob("*.py"), *JUPYTER.rglob("*.py")]:
        heavy = imported_modules(path) & {"mlx", "mlx_lm", "torch"}
        assert heavy <= allowed.get(path, set()), path


# The rooms of README's map and which rooms each may import (besides itself and `errors`): a


def test_the_jupyter_side_uses_only_the_engines_public_api():
    import codestral_engine

    public = set(codestral_engine.__all__) | set(codestral_engine._MODULES)
    for path in JUPYTER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "codestral_engine":
                assert {a.name for a in node.names} <= public, path
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("codestral_engine."), (path, node.module)


def test_importing_the_engine_does_not_import_mlx():
    code = "import sys, codestral_engine; print('mlx' in sys.modules, 'mlx_lm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_jupyter_lists_both_extensions_enabled_and_ok():
    def listing(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "jupyter", *args, "list"],
            capture_output=True,
            text=True,
            env=VENV_ENV,
            timeout=120,
        )
        return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # drop colours

    lab = listing("labextension")
    assert re.search(r"jupyter-codestral v[\d.]+ enabled OK", lab), lab
    server = listing("server", "extension")
    assert re.search(r"jupyter_codestral enabled", server), server
    assert re.search(r"jupyter_codestral [\d.]+ OK", server), server


def test_the_diff_view_runs_on_jupyterlabs_own_codemirror():
    """@codemirror/merge is bundled; the CodeMirror core it builds on is JupyterLab's shared
    copy (a second copy of @codemirror/state would break every editor extension it meets)."""
    static = JUPYTER / "labextension" / "static"
    licenses = json.loads((static / "third-party-licenses.json").read_text())
    bundled = {package["name"] for package in licenses["packages"]}
    assert "@codemirror/merge" in bundled
    entry = next(static.glob("remoteEntry.*.js")).read_text()
    for shared in ("@codemirror/state", "@codemirror/view", "@codemirror/language"):
        assert shared not in bundled
        # Consumed from JupyterLab's share scope, with no fallback copy of its own.
        assert re.search(rf'shareKey:"{shared}",import:null,[^}}]*singleton:!0', entry), shared
