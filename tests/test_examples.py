"""The examples a new user opens first run as shipped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_engine_quickstart_runs(tmp_path):
    env = {**os.environ, "CODESTRAL_MODEL": "", "TMPDIR": str(tmp_path)}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "engine_quickstart.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    reused = re.search(r"reused (\d+) of (\d+) prompt tokens", result.stdout)
    assert reused and 0 < int(reused.group(2)) - int(reused.group(1)) <= 4
    assert "cancelled a long request" in result.stdout


def demo_env(tmp_path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env.pop("CODESTRAL_MODEL", None)
    return env


def test_headless_demo_runs_the_data_science_notebook(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_codestral.demo", "demo", "--headless"],
        capture_output=True,
        text=True,
        timeout=600,
        env=demo_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "tiny demo model" in out
    assert out.count("%%codestral") == 3
    assert "```python\n" in out  # code modes render as highlighted code
    assert 'totals = sales.groupby("region")' in out  # --fill shows the code around the gap
    assert "--- failed cell\n+++ proposed fix" in out  # the fix of the misspelt column
    assert "Codestral: shared engine at http://127.0.0.1:" in out
    assert "Warning" not in result.stderr
    # The demo stopped the engine it started.
    assert not (tmp_path / "runtime" / "codestral-engine.json").exists()


def test_teaching_notebook_executes_headless(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    from codestral_engine import connection

    env = demo_env(tmp_path)
    nb = nbformat.read(EXAMPLES / "teaching.ipynb", as_version=4)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this environment
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3").execute()
        running = connection.read_live()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert running is not None
    os.kill(running.pid, signal.SIGTERM)
    outputs = {
        i: cell.get("outputs", []) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
    }
    for i, cell in enumerate(nb.cells):
        if cell.source.startswith("%%codestral"):
            markdown = [
                o["data"]["text/markdown"]
                for o in outputs[i]
                if "text/markdown" in o.get("data", {})
            ]
            assert len(markdown) == 1 and markdown[0].strip(), cell.source
    printed = "".join(o.get("text", "") for o in outputs[6])  # print(solution)
    assert printed.startswith("def is_prime(n):\n    ")
    assert "print([n for n in range(20) if is_prime(n)])" in printed


def test_the_project_example_shows_its_signatures_to_the_magic_and_the_fix(models, tmp_path):
    """project_context.ipynb runs as shipped, and the prompts of its magic and its fix carry
    the signatures of examples/src/shop/pricing.py (the engine's --log-prompts shows them)."""
    import json

    import nbformat
    from nbclient import NotebookClient

    from .helpers import TOKEN, start_server

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    log = tmp_path / "engine.log"
    server = start_server(models["hf"], runtime, "--token", TOKEN, "--log-prompts", log=log)
    nb = nbformat.read(EXAMPLES / "project_context.ipynb", as_version=4)
    old = dict(os.environ)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime)  # the kernel finds that engine
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=30)
    records = [
        json.loads(line.split(": ", 1)[1])
        for line in log.read_text().splitlines()
        if line.startswith("codestral-engine: {")
    ]
    signature = "# def net_price(gross: float, vat_rate: float = DEFAULT_VAT_RATE, *, rounding"
    fim = [r["prompt"] for r in records if r["event"] == "fim_prompt"]
    chats = [json.dumps(r) for r in records if r["event"] == "chat_messages"]
    assert fim and signature in fim[-1] and "src/shop/pricing.py:\n" in fim[-1]
    assert chats and "unexpected keyword argument 'vat'" in chats[-1]
    assert json.dumps(signature)[1:-1] in chats[-1]


def example_imports() -> dict[str, set[str]]:
    """Top-level modules each example imports (notebook cells with IPython syntax included)."""
    import ast

    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    to_python = TransformerManager().transform_cell
    found: dict[str, set[str]] = {}
    for path in sorted(EXAMPLES.iterdir()):
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            sources = [to_python(c.source) for c in nb.cells if c.cell_type == "code"]
        elif path.suffix == ".py":
            sources = [path.read_text()]
        else:
            continue
        names = found.setdefault(path.name, set())
        for source in sources:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return found


def test_examples_import_only_what_the_install_provides():
    """CI installs the test extras, so an example importing a test-only package would pass
    here and fail for a user who ran the README's install. Check each import statically
    against the standard library, this project, and its declared (non-extra) dependencies."""
    from importlib.metadata import packages_distributions

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    ours = {"jupyter_codestral", "codestral_engine"}
    ours |= {p.name for p in (EXAMPLES / "src").iterdir()}  # the project example's own code
    providers = packages_distributions()
    examples = example_imports()
    assert "pandas" in examples["data_science.ipynb"]  # the check sees notebook imports
    for example, modules in examples.items():
        for module in sorted(modules - ours - set(sys.stdlib_module_names)):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            assert dists & declared, (
                f"{example} imports {module}, which the README's install does not provide: "
                f"add its distribution to [project] dependencies in pyproject.toml"
            )


def test_installed_examples_open_from_a_copy_the_user_owns(tmp_path, monkeypatch):
    """From a wheel, the examples lie in site-packages: the demo opens a copy in Jupyter's
    data directory (where notebooks can be saved and the project context may read), and keeps
    the user's edits there on the next run."""
    import shutil

    from jupyter_codestral import demo

    installed = tmp_path / "lib" / "site-packages" / "jupyter_codestral" / "examples"
    shutil.copytree(EXAMPLES, installed)
    monkeypatch.setattr(demo, "EXAMPLE_DIRS", (installed,))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    folder = demo.examples_dir()
    assert folder == tmp_path / "data" / "codestral-examples"
    assert (folder / "src" / "shop" / "pricing.py").read_text() == (
        EXAMPLES / "src" / "shop" / "pricing.py"
    ).read_text()
    (folder / "data_science.ipynb").write_text("edited")
    assert demo.examples_dir() == folder
    assert (folder / "data_science.ipynb").read_text() == "edited"
