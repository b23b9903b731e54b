"""`jupyter codestral demo`: open the example notebooks in JupyterLab, engine on the way.

The engine serves the model `codestral_engine.choose_model` names ($CODESTRAL_MODEL, else the
release `codestral-engine pull` downloaded, else the built-in tiny demo model). With
`--headless`, an example notebook is executed in a real kernel instead and what each
`%%codestral` cell streamed is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from codestral_engine import choose_model, connection

from .client.engine_client import EngineClient
from .client.local_engine import stop_local_server
from .errors import CodestralError

PACKAGE = Path(__file__).resolve().parent
EXAMPLE_DIRS = (PACKAGE / "examples", PACKAGE.parent / "examples")  # wheel, then checkout


def examples_dir() -> Path:
    """The examples to open: a checkout's own, or a copy of the installed ones in Jupyter's
    data directory (files already there are kept: they may hold the user's edits). Installed
    files lie in site-packages, which a notebook should not save into and which the project
    context never reads."""
    for path in EXAMPLE_DIRS:
        if (path / "data_science.ipynb").is_file():
            if "-packages" not in str(path):
                return path
            copy = Path(jupyter_data_dir()) / "codestral-examples"
            for source in path.rglob("*"):
                target = copy / source.relative_to(path)
                if source.is_file() and "__pycache__" not in source.parts and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
            return copy
    raise CodestralError("The example notebooks are missing from this installation.")


def run_headless(notebook: Path) -> int:
    """Execute `notebook` in a real kernel; print each cell and what Codestral wrote."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)

    def show(cell, cell_index, **_):
        if cell.cell_type != "code":
            return
        print(f"\n--- In [{cell_index}]:\n{cell.source}")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            text = data.get("text/markdown") or data.get("text/plain") or output.get("text", "")
            if text:
                print(f"--- Out:\n{text.rstrip()}")

    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
        on_cell_executed=show,
    )
    client.execute()
    return 0


def run_until_stopped(command: list[str]) -> int:
    """Run JupyterLab until it exits. Ctrl+C reaches it too, and it shuts its kernels down while
    this process waits; a second Ctrl+C stops it without waiting."""
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter codestral", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="open the example notebooks (or run one headless); other options go to JupyterLab",
    )
    demo.add_argument(
        "--headless", action="store_true", help="execute a notebook, print what streamed"
    )
    demo.add_argument(
        "--notebook", type=Path, help="notebook for --headless (default: data_science)"
    )
    args, lab_options = parser.parse_known_args(argv)  # the rest go to JupyterLab (--port ...)
    if args.headless and lab_options:
        parser.error(f"unrecognized arguments: {' '.join(lab_options)}")

    model = choose_model()
    if model.note:
        print(f"jupyter codestral: {model.note}")
    try:
        folder = examples_dir()
        was_running = connection.read_live() is not None
        EngineClient.local(model).close()  # start (or find) it, with progress
        # One Ctrl+C stops JupyterLab (no "Shutdown this Jupyter server?" question).
        lab = [sys.executable, "-m", "jupyterlab", str(folder), "--ServerApp.answer_yes=True",
               *lab_options]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lab.append("--allow-root")  # containers often run as root; JupyterLab refuses it
        try:
            if args.headless:
                return run_headless(args.notebook or folder / "data_science.ipynb")
            return run_until_stopped(lab)
        finally:
            if not was_running:  # an engine the demo started does not outlive it
                stop_local_server()
    except CodestralError as exc:
        print(f"jupyter codestral: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
