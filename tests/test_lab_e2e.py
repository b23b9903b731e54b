"""Ghost text end to end: a real `jupyter lab` with our extensions, headless Debian Chromium
driven by Playwright, and the shared engine serving the tiny model."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nbformat
import pytest

from .test_server import TOKEN, start_server

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
LAB_TOKEN = "e2e-lab-token"
GHOST = ".jp-GhostText:not(.jp-GhostText-letterSpacer):not(.jp-GhostText-lineSpacer)"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SETTINGS = {  # long suggestions without a time budget, so typing on cancels a running one
    "maxTokens": 200,
    "timeBudgetMs": 0,
    "debounceMs": 60,
    "warmOnFocus": False,
}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str], metadata: dict | None = None) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(src[3:]) if src.startswith("md:")
        else nbformat.v4.new_code_cell(src)
        for src in cells
    ]  # fmt: skip
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.update(metadata or {})
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    runtime, work, settings = root / "runtime", root / "work", root / "settings"
    for d in (runtime, work, settings / "jupyter-codestral"):
        d.mkdir(parents=True)
    (settings / "jupyter-codestral" / "plugin.jupyterlab-settings").write_text(json.dumps(SETTINGS))
    write_notebook(
        work / "context.ipynb",
        ["md:# Sales\nTotals per region.", "secret_total_xyz = 41 + 1", ""],
    )
    write_notebook(work / "exam.ipynb", ["x = 1", ""], {"codestral": {"enabled": False}})
    engine_log = root / "engine.log"
    engine = start_server(models["hf"], runtime, "--token", TOKEN, "--log-prompts", log=engine_log)
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={LAB_TOKEN}",
        f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
    ]  # fmt: skip
    lab_log = (root / "lab.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=lab_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (root / "lab.log").read_text()
        try:
            if httpx.get(f"{url}/api/status", params={"token": LAB_TOKEN}).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "jupyter lab did not start"
        time.sleep(0.3)
    yield type("Lab", (), {"url": url, "engine": engine, "engine_log": engine_log, "root": root})
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    engine.proc.send_signal(signal.SIGTERM)
    engine.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


def open_notebook(page, lab, name: str):
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={LAB_TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-codestral-status", timeout=30_000)


def edit_last_cell(page) -> None:
    page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-content").click()
    page.evaluate(
        """() => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.activeCellIndex = notebook.widgets.length - 1;
        notebook.mode = 'edit';
        notebook.activeCell.editor.focus();
    }"""
    )
    page.wait_for_timeout(200)


def record_ghost_states(page) -> None:
    """Collect every distinct ghost text the page shows, from a MutationObserver."""
    page.evaluate(
        """(selector) => {
        window.__ghostStates = [];
        const seen = () => Array.from(document.querySelectorAll(selector))
            .map(e => e.textContent).join('');
        new MutationObserver(() => {
            const text = seen();
            const states = window.__ghostStates;
            if (text && states[states.length - 1] !== text) states.push(text);
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""",
        GHOST,
    )


def squash(text: str) -> str:
    return re.sub(r"\s", "", text)


def active_source(page) -> str:
    return page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.activeCell"
        ".model.sharedModel.getSource()"
    )


def engine_status(lab) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.get(f"{lab.engine.url}/v1/status", headers=headers).json()


def logged_prompts(lab) -> list[dict]:
    prefix = "codestral-engine: "
    return [
        json.loads(line[len(prefix) :])
        for line in lab.engine_log.read_text().splitlines()
        if line.startswith(prefix + "{")
    ]


def test_ghost_text_streams_with_notebook_context_and_tab_accepts(page, lab):
    open_notebook(page, lab, "context.ipynb")
    edit_last_cell(page)
    record_ghost_states(page)
    page.keyboard.type("for region in range(3):", delay=20)
    page.wait_for_function("() => window.__ghostStates.length >= 3", timeout=30_000)
    page.wait_for_timeout(800)  # let the suggestion finish streaming
    states = page.evaluate("() => window.__ghostStates")
    growing = [s for a, s in itertools.pairwise(states) if s.startswith(a) and s != a]
    assert len(growing) >= 2, states  # at least three observed states, each extending the last
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ghost-text.png"))

    ghost = page.locator(GHOST).first.text_content()
    page.keyboard.press("Tab")
    page.wait_for_timeout(300)
    source = active_source(page)
    assert source.startswith("for region in range(3):")
    assert len(source) > len("for region in range(3):")
    added = source[len("for region in range(3):") :]
    assert ghost.strip() and squash(added).startswith(squash(ghost))  # line breaks render apart

    prompts = logged_prompts(lab)
    assert any("secret_total_xyz = 41 + 1" in p["prompt"] for p in prompts)
    assert any("# # Sales" in p["prompt"] for p in prompts)  # markdown as a comment

    status = page.locator(".jp-codestral-status")
    page.wait_for_function(
        "() => /\\d+ ms/.test(document.querySelector('.jp-codestral-status').textContent)",
        timeout=10_000,
    )
    assert re.search(r"\d+ ms", status.text_content())


def test_typing_on_cancels_the_running_request(page, lab):
    open_notebook(page, lab, "context.ipynb")
    edit_last_cell(page)
    before = engine_status(lab)["finished_requests"].get("cancelled", 0)
    # Each pause is longer than the debounce, shorter than a 200-token suggestion takes.
    for ch in "total = secret_total_xyz * 2":
        page.keyboard.type(ch)
        page.wait_for_timeout(120)
    page.wait_for_timeout(500)
    after = engine_status(lab)["finished_requests"].get("cancelled", 0)
    assert after > before


def test_accept_word_inserts_only_the_next_word(page, lab):
    open_notebook(page, lab, "context.ipynb")
    edit_last_cell(page)
    page.keyboard.type("def area(r):", delay=20)
    page.wait_for_selector(GHOST, timeout=30_000)
    page.wait_for_timeout(800)
    ghost = page.locator(GHOST).first.text_content().lstrip()
    page.keyboard.press("Control+ArrowRight")
    page.wait_for_timeout(300)
    added = active_source(page)[len("def area(r):") :]
    assert added.strip() and ghost.startswith(added.strip()), (added, ghost)
    assert len(squash(added)) < len(squash(ghost))


def test_notebook_metadata_turns_ghost_text_off(page, lab):
    open_notebook(page, lab, "exam.ipynb")
    edit_last_cell(page)
    requests_before = sum(engine_status(lab)["finished_requests"].values())
    record_ghost_states(page)
    page.keyboard.type("for i in range(3):", delay=20)
    page.wait_for_timeout(1500)
    assert page.evaluate("() => window.__ghostStates") == []
    assert sum(engine_status(lab)["finished_requests"].values()) == requests_before
