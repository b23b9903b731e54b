"""A real `jupyter lab` (with this package's extensions) and headless Debian Chromium, for the
browser tests and bench/bench_ghost.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import nbformat

from .helpers import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
LAB_TOKEN = "e2e-lab-token"
# Ghost text, without the transient spacer spans that carry the same class.
GHOST = ".jp-GhostText:not(.jp-GhostText-letterSpacer):not(.jp-GhostText-lineSpacer)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str], metadata: dict | None = None) -> None:
    """Code cells, or markdown for sources starting with 'md:'."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(src[3:])
        if src.startswith("md:")
        else nbformat.v4.new_code_cell(src)
        for src in cells
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.update(metadata or {})
    nbformat.write(nb, path)


def start_lab(
    root: Path,
    runtime: Path,
    work: Path,
    settings: dict,
    extra_env: dict | None = None,
    extra_args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen, str]:
    """`jupyter lab` on a free port, finding the engine through `runtime`; returns (proc, url).
    `extra_env` adds to its environment (its terminals inherit it); `extra_args` to its
    command line (server settings)."""
    settings_dir = root / "settings"
    (settings_dir / "jupyter-codestral").mkdir(parents=True, exist_ok=True)
    (settings_dir / "jupyter-codestral" / "plugin.jupyterlab-settings").write_text(
        json.dumps(settings)
    )
    env = {
        **os.environ,
        **(extra_env or {}),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
    }
    port = free_port()
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={LAB_TOKEN}",
        f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True", *extra_args,
    ]  # fmt: skip
    log = (root / "lab.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((root / "lab.log").read_text())
        try:
            return httpx.get(f"{url}/api/status", params={"token": LAB_TOKEN}).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=120, interval=0.3, what="jupyter lab to start")
    return proc, url


def open_notebook(page, url: str, name: str, app: str = "lab") -> None:
    if app == "lab":
        page.goto(f"{url}/lab/tree/{name}?reset&token={LAB_TOKEN}")
    else:  # Notebook 7, served by the same server
        page.goto(f"{url}/notebooks/{name}?token={LAB_TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    if app == "lab":
        page.wait_for_selector(".jp-codestral-status", timeout=30_000)
    # The notebook in front: on a first load a Launcher can open on top of it and hide it.
    page.wait_for_function(
        """(name) => {
        const app = window.jupyterapp;
        if (!app || !app.shell.currentWidget) return false;
        for (const widget of app.shell.widgets('main')) {
            if (widget.context && widget.context.path.endsWith(name)) {
                app.shell.activateById(widget.id);
                return app.shell.currentWidget === widget;
            }
        }
        return false;
    }""",
        arg=name,
        timeout=60_000,
    )
    # The notebook's loading spinner: the first page after a fresh build can take a while.
    page.wait_for_selector(".jp-Spinner", state="detached", timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible", timeout=60_000)


def edit_last_cell(page) -> None:
    """Put the cursor in the notebook's last cell. It is activated and scrolled into view first
    (long notebooks render only the cells on screen, and a fresh build renders late), then
    clicked, so the page has the keyboard focus."""
    page.evaluate(
        """async () => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        const last = notebook.widgets.length - 1;
        notebook.activeCellIndex = last;
        await notebook.scrollToItem(last);
    }"""
    )
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCell.editor", timeout=30_000
    )
    cell = page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-content")
    cell.wait_for(state="visible", timeout=60_000)
    cell.click()
    page.evaluate(
        """() => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.mode = 'edit';
        notebook.activeCell.editor.focus();
    }"""
    )
    page.wait_for_function(
        """() => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        return notebook.mode === 'edit' && notebook.activeCell.editor.hasFocus();
    }""",
        timeout=30_000,
    )


def wait_for_ghost_to_settle(page, timeout: float = 30_000) -> str:
    """Wait until the ghost text shows and has stopped changing (the suggestion finished
    streaming); returns it."""
    return page.wait_for_function(
        """(selector) => {
        const text = Array.from(document.querySelectorAll(selector))
            .map(e => e.textContent).join('');
        const seen = window.__settle ?? (window.__settle = {text: null, since: 0});
        if (text !== seen.text) { seen.text = text; seen.since = Date.now(); return false; }
        return text && Date.now() - seen.since > 400 ? text : false;
    }""",
        arg=GHOST,
        timeout=timeout,
        polling=100,
    ).json_value()


def press_and_wait_for_the_source(page, key: str, timeout: float = 10_000) -> str:
    """Press `key` (an accept) and wait until the active cell's source has changed."""
    source = "() => window.jupyterapp.shell.currentWidget.content.activeCell.model.sharedModel"
    before = page.evaluate(f"{source}.getSource()")
    page.keyboard.press(key)
    page.wait_for_function(
        f"(before) => ({source}.getSource()) !== before", arg=before, timeout=timeout
    )
    return page.evaluate(f"{source}.getSource()")
