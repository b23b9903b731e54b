"""Ghost text end to end: a real `jupyter lab` with our extensions, headless Debian Chromium
driven by Playwright, and the shared engine serving the tiny model."""

from __future__ import annotations

import itertools
import json
import re
import signal
from pathlib import Path

import httpx
import pytest

from codestral_engine.assembly.releases import MISTRAL_RELEASE

from .fake_hub import FakeHub
from .helpers import TOKEN, start_server, wait_until
from .lab_session import (
    CHROMIUM,
    CHROMIUM_ARGS,
    GHOST,
    LAB_TOKEN,
    edit_last_cell,
    open_notebook,
    press_and_wait_for_the_source,
    start_lab,
    wait_for_ghost_to_settle,
    write_notebook,
)
from .vllm_server import classroom_env

playwright_api = pytest.importorskip("playwright.sync_api")

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


# Playwright's sync API runs its own event loop in this thread: pytest-jupyter's autouse
# loop fixtures (for the route tests) stay out of these tests.
@pytest.fixture
def jp_asyncio_loop():
    yield None


@pytest.fixture
def jp_server_cleanup():
    yield None


@pytest.fixture(scope="module")
def lab(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    runtime, work = root / "runtime", root / "work"
    runtime.mkdir()
    work.mkdir()
    write_notebook(
        work / "context.ipynb",
        ["md:# Sales\nTotals per region.", "secret_total_xyz = 41 + 1", ""],
    )
    write_notebook(work / "midline.ipynb", ["secret_total_xyz = 41 + 1", "best = max()"])
    write_notebook(work / "exam.ipynb", ["x = 1", ""], {"codestral": {"enabled": False}})
    write_notebook(work / "hints.ipynb", ["x = 1", ""], {"codestral": {"mode": "hints"}})
    write_notebook(work / "facts.ipynb", [FRAME_CELL, "import time\ntime.sleep(3)", ""])
    write_notebook(work / "broken.ipynb", BROKEN_CELLS)
    write_notebook(work / "broken-long.ipynb", LONG_BROKEN_CELLS)
    write_notebook(work / "broken-exam.ipynb", BROKEN_CELLS, {"codestral": {"enabled": False}})
    write_notebook(work / "broken-hints.ipynb", BROKEN_CELLS, {"codestral": {"mode": "hints"}})
    (work / "script.py").write_text("CONSTANT_IN_FILE = 7\n\n\n")
    write_project(work)
    write_notebook(work / "recent-a.ipynb", ["def distinctive_helper_xyz(rows):\n    return 1", ""])
    write_notebook(work / "recent-b.ipynb", ["y = 2", ""])
    engine_log = root / "engine.log"
    engine = start_server(models["hf"], runtime, "--token", TOKEN, "--log-prompts", log=engine_log)
    hub = FakeHub(MISTRAL_RELEASE, models["mistral"])  # for the download command's terminal
    hub_env = {
        "HF_ENDPOINT": hub.start(),
        "HF_HOME": str(root / "hf"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "HF_HUB_DISABLE_XET": "1",
    }
    proc, url = start_lab(root, runtime, work, SETTINGS, extra_env=hub_env)
    yield type("Lab", (), {"url": url, "engine": engine, "engine_log": engine_log, "root": root})
    hub.stop()
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


BROKEN_CELLS = ["radius_cm = 3", "area = 3.14 * radius_cm ** 2 * undefined_factor"]
LONG_BROKEN_CELLS = [
    "radius_cm = 3",
    "".join(f"value_{i} = radius_cm * {i}\n" for i in range(150))
    + "total = value_1 * undefined_factor",
]
FRAME_CELL = (
    "import pandas as pd\nsales = pd.DataFrame({'region_name_xyz': ['north'], 'amount_eur': [1.5]})"
)
SPY_ON_PROBES = """() => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    window.__probes = [];
    window.__probesAnswered = 0;
    const send = kernel.requestExecute.bind(kernel);
    kernel.requestExecute = (content, ...rest) => {
        const future = send(content, ...rest);
        if (content.silent) {
            window.__probes.push(kernel.status);
            future.done.then(() => window.__probesAnswered++);
        }
        return future;
    };
}"""


PRICING = '''
def net_price(gross: float, vat_rate: float = 0.2, *, rounding: int = 2) -> float:
    """The price without VAT."""
    return round(gross / (1 + vat_rate), rounding)


class Basket:
    def add(self, item: str, quantity: int = 1, *, discount_code: str | None = None):
        pass
'''
# The package's directory is computed at run time: only the kernel can say where it is.
PROJECT_CELLS = [
    "import sys, pathlib\n"
    "sys.path.insert(0, str(pathlib.Path.cwd().parent / 'code'))\n"
    "from shop.pricing import net_price, Basket\n"
    "basket = Basket()",
    "",
]


def write_project(work: Path) -> None:
    """A project's own code: a package found only through a run-time sys.path edit, used by
    analysis/project.ipynb; a module beside beside/never.ipynb, which never runs."""
    (work / "code" / "shop").mkdir(parents=True)
    (work / "code" / "shop" / "__init__.py").write_text("")
    (work / "code" / "shop" / "pricing.py").write_text(PRICING)
    (work / "analysis").mkdir()
    write_notebook(work / "analysis" / "project.ipynb", PROJECT_CELLS)
    (work / "beside").mkdir()
    (work / "beside" / "inventory.py").write_text(
        "def restock(item_id: int, amount: int = 12, *, warehouse: str = 'main'):\n    ...\n"
    )
    write_notebook(work / "beside" / "never.ipynb", ["from inventory import restock", ""])


def logged_prompts(lab, event: str = "fim_prompt") -> list[dict]:
    """What the engine's --log-prompts printed: FIM prompts, or (chat_messages) chat requests."""
    prefix = "codestral-engine: "
    records = [
        json.loads(line[len(prefix) :])
        for line in lab.engine_log.read_text().splitlines()
        if line.startswith(prefix + "{")
    ]
    return [r for r in records if r["event"] == event]


def test_ghost_text_streams_with_notebook_context_and_tab_accepts(page, lab):
    open_notebook(page, lab.url, "context.ipynb")
    edit_last_cell(page)
    record_ghost_states(page)
    page.keyboard.type("total = ", delay=20)  # its suggestion is one long line
    page.wait_for_function("() => window.__ghostStates.length >= 3", timeout=30_000)
    wait_for_ghost_to_settle(page)
    states = page.evaluate("() => window.__ghostStates")
    growing = [s for a, s in itertools.pairwise(states) if s.startswith(a) and s != a]
    assert len(growing) >= 2, states  # at least three observed states, each extending the last
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ghost-text.png"))

    ghost = page.locator(GHOST).first.text_content()
    source = press_and_wait_for_the_source(page, "Tab")
    assert source.startswith("total = ")
    assert len(source) > len("total = ")
    added = source[len("total = ") :]
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
    status.click()  # the details: a readable table, not a JSON dump
    details = page.locator(".jp-Dialog .jp-codestral-details")
    details.wait_for(timeout=10_000)
    text = details.inner_text()
    assert "State\tready" in text and "Cache reuse" in text and "{" not in text, text
    page.keyboard.press("Escape")


def test_typing_on_cancels_the_running_request(page, lab):
    open_notebook(page, lab.url, "context.ipynb")
    edit_last_cell(page)
    before = engine_status(lab)["finished_requests"].get("cancelled", 0)
    # Each pause is longer than the debounce, shorter than a 200-token suggestion takes.
    for ch in "total = secret_total_xyz * 2":
        page.keyboard.type(ch)
        page.wait_for_timeout(120)  # the typist's pace is the scenario, not a wait
    wait_until(
        lambda: engine_status(lab)["finished_requests"].get("cancelled", 0) > before,
        timeout=30,
        what="a request cancelled by the typing",
    )


def test_typing_mid_line_brings_a_suggestion_without_invoking(page, lab):
    """Inside brackets, with code after the cursor: JupyterLab asks a provider there only when
    its fill-in-the-middle-on-typing setting is on, which our provider's defaults turn on."""
    open_notebook(page, lab.url, "midline.ipynb")
    edit_last_cell(page)
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")  # best = max(|)
    asked_before = len(logged_prompts(lab))
    record_ghost_states(page)
    page.keyboard.type("secret", delay=20)
    page.wait_for_function("() => window.__ghostStates.length >= 1", timeout=30_000)
    prompts = logged_prompts(lab)[asked_before:]
    assert prompts, "no request reached the engine"
    assert prompts[-1]["prompt"].endswith("best = max(secret")
    assert prompts[-1]["suffix"].startswith(")")
    assert active_source(page) == "best = max(secret)"  # shown, not inserted


def test_accept_word_inserts_only_the_next_word(page, lab):
    open_notebook(page, lab.url, "context.ipynb")
    edit_last_cell(page)
    page.keyboard.type("total = ", delay=20)
    wait_for_ghost_to_settle(page)
    ghost = page.locator(GHOST).first.text_content().lstrip()
    added = press_and_wait_for_the_source(page, "Control+ArrowRight")[len("total = ") :]
    assert added.strip() and ghost.startswith(added.strip()), (added, ghost)
    assert len(squash(added)) < len(squash(ghost))


def test_notebook_metadata_turns_ghost_text_off(page, lab):
    open_notebook(page, lab.url, "exam.ipynb")
    edit_last_cell(page)
    requests_before = sum(engine_status(lab)["finished_requests"].values())
    record_ghost_states(page)
    page.keyboard.type("for i in range(3):", delay=20)
    page.wait_for_timeout(1500)  # a window in which nothing may happen: no condition to wait on
    assert page.evaluate("() => window.__ghostStates") == []
    assert sum(engine_status(lab)["finished_requests"].values()) == requests_before


def test_enter_on_an_indented_line_asks_for_a_suggestion(page, lab):
    open_notebook(page, lab.url, "context.ipynb")
    edit_last_cell(page)
    page.keyboard.type("def area(r):", delay=20)
    page.keyboard.press("Enter")
    page.keyboard.type("a = 1", delay=20)  # one line: its suggestion cannot contain a newline
    wait_for_ghost_to_settle(page)
    page.evaluate(
        """(selector) => {
        const seen = window.__afterEnter = {cleared: false, shown: false};
        new MutationObserver(() => {
            const text = Array.from(document.querySelectorAll(selector))
                .map(e => e.textContent).join('');
            if (!text) seen.cleared = true;
            else if (seen.cleared) seen.shown = true;
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""",
        GHOST,
    )
    page.keyboard.press("Enter")  # the new line is blank and indented: core never triggers
    assert active_source(page).endswith("a = 1\n    ")
    # The old suggestion goes away and a new one, asked for by the extension, appears.
    page.wait_for_function("() => window.__afterEnter.shown", timeout=30_000)


def test_plain_python_files_use_the_file_as_context(page, lab):
    page.goto(f"{lab.url}/lab/tree/script.py?reset&token={LAB_TOKEN}")
    page.wait_for_selector(".jp-FileEditor .cm-content", timeout=60_000)
    page.locator(".jp-FileEditor .cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("def double(v):", delay=20)
    page.wait_for_selector(GHOST, timeout=30_000)
    prompts = logged_prompts(lab)
    assert prompts[-1]["prompt"].startswith("CONSTANT_IN_FILE = 7\n")
    assert prompts[-1]["prompt"].endswith("def double(v):")


def test_hints_mode_gives_single_line_suggestions(page, lab):
    open_notebook(page, lab.url, "hints.ipynb")
    edit_last_cell(page)
    page.keyboard.type("for i in range(3):", delay=20)  # a block would be allowed here
    wait_for_ghost_to_settle(page)
    source = press_and_wait_for_the_source(page, "Tab")
    assert len(source) > len("for i in range(3):") and "\n" not in source


def test_ghost_text_works_in_notebook_7(page, lab):
    open_notebook(page, lab.url, "context.ipynb", app="notebook")
    edit_last_cell(page)
    page.keyboard.type("for region in range(3):", delay=20)
    wait_for_ghost_to_settle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ghost-text-notebook7.png"))
    assert len(press_and_wait_for_the_source(page, "Tab")) > len("for region in range(3):")


# The licence question on the terminal's screen, read from xterm's buffer (the widget's private
# `_term`): the canvas renderer puts no text in the DOM.
TERMINAL_ASKS = """() => {
    const term = window.jupyterapp.shell.currentWidget.content._term;
    const buffer = term?.buffer.active;
    const lines = [];
    for (let i = 0; buffer && i < buffer.length; i++) {
        lines.push(buffer.getLine(i).translateToString(true));
    }
    return lines.join('').includes('Accept the licence and download? [y/N]');
}"""


def test_download_command_runs_pull_in_a_terminal(page, lab):
    """The first-run path from JupyterLab: the command opens a terminal running pull, which
    asks for the licence there; the answer typed into the terminal starts the download."""
    open_notebook(page, lab.url, "context.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('codestral:pull')")
    page.wait_for_selector(".jp-Terminal", timeout=30_000)
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.session?.connectionStatus"
        " === 'connected'",
        timeout=30_000,
    )
    # The command line is sent once the terminal connects: answer when pull asks.
    page.wait_for_function(TERMINAL_ASKS, timeout=60_000)
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.session"
        ".send({type: 'stdin', content: ['y\\n']})"
    )  # the licence question's answer, read by pull from the terminal
    snapshots = lab.root / "hf" / "hub" / "models--mistralai--Codestral-22B-v0.1" / "snapshots"

    def downloaded() -> bool:
        weights = list(snapshots.glob("*/consolidated.safetensors"))
        return bool(weights and weights[0].stat().st_size)

    wait_until(downloaded, timeout=60, interval=0.1, what="pull to download the weights")
    licences = json.loads((lab.root / "config" / "codestral-engine" / "licenses.json").read_text())
    assert licences["mnpl"]["first_download"] == MISTRAL_RELEASE


def test_ghost_text_from_a_classroom_vllm(page, vllm, tmp_path):
    """A classroom's JupyterLab: no local engine; the environment a JupyterHub spawner gives
    points it at a shared vLLM with protocol = "vllm"; typing shows its ghost text and the
    status asks the server."""
    runtime, work = tmp_path / "runtime", tmp_path / "work"
    runtime.mkdir()
    work.mkdir()
    write_notebook(work / "class.ipynb", ["scores = [3, 5, 8]", ""])
    proc, url = start_lab(tmp_path, runtime, work, SETTINGS, extra_env=classroom_env(vllm))
    try:
        open_notebook(page, url, "class.ipynb")
        edit_last_cell(page)
        page.keyboard.type("mean = ", delay=20)
        ghost = wait_for_ghost_to_settle(page)
        assert ghost.strip()
        source = press_and_wait_for_the_source(page, "Tab")
        assert source.startswith("mean = ") and len(source) > len("mean = ")
        assert not list(runtime.glob("codestral-engine*.json"))  # no local engine started
        page.locator(".jp-codestral-status").click()
        details = page.locator(".jp-Dialog .jp-codestral-details")
        details.wait_for(timeout=10_000)
        text = details.inner_text()
        assert "State\tready" in text and f"remote server at {vllm.url}" in text, text
        assert "Protocol\tvllm" in text, text
        page.keyboard.press("Escape")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


KERNEL_STATUS = "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status"


def run_all_until_probed(page, lab, name: str) -> None:
    """Open a notebook, run all its cells, and wait until the kernel has been probed."""
    open_notebook(page, lab.url, name)
    page.wait_for_function(f"() => {KERNEL_STATUS} === 'idle'", timeout=60_000)
    page.evaluate(SPY_ON_PROBES)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("() => window.__probes.length >= 1", timeout=30_000)
    # Answered: its facts and origins are what the next request sends.
    page.wait_for_function(
        "() => window.__probesAnswered >= window.__probes.length", timeout=30_000
    )


def type_in_the_last_cell(page, lab, text: str) -> list[str]:
    """Type `text` at a typist's pace in the last cell; the FIM prompts it sent the engine."""
    asked_before = len(logged_prompts(lab))
    edit_last_cell(page)
    for ch in text:
        page.keyboard.type(ch)
        page.wait_for_timeout(120)  # the typist's pace is the scenario, not a wait
    wait_for_ghost_to_settle(page)
    prompts = [p["prompt"] for p in logged_prompts(lab)[asked_before:]]
    assert prompts, "no request reached the engine"
    return prompts


def test_ghost_text_knows_the_kernels_dataframe(page, lab):
    """After a cell defines a DataFrame, the prompt opens with its real column names; the
    probe waits while a cell runs; typing does not change the prompt's start."""
    # Run all: the DataFrame cell ends while the sleeping cell is queued and then runs for
    # 3 s; the probe must wait for the kernel to be idle, not run between or beside them.
    run_all_until_probed(page, lab, "facts.ipynb")
    assert set(page.evaluate("() => window.__probes")) == {"idle"}
    prompts = type_in_the_last_cell(page, lab, "total = sal")
    assert "Live objects in the kernel:" in prompts[-1]
    assert "'region_name_xyz' (" in prompts[-1] and "'amount_eur' (float64)" in prompts[-1]
    header = prompts[-1].split("\n\n")[0]
    assert all(p.startswith(header) for p in prompts)  # the same start while typing


def test_ghost_text_knows_the_project_code_the_kernel_imported(page, lab):
    """A package on sys.path by a path computed at run time: after the import cell runs, the
    prompt opens with its function's defaults and its class's method parameters, and typing
    does not change the prompt's start."""
    run_all_until_probed(page, lab, "analysis/project.ipynb")
    prompts = type_in_the_last_cell(page, lab, "total = net_price(")
    last = prompts[-1]
    assert "# From the project's own files:\n# code/shop/pricing.py:\n" in last, last
    assert "vat_rate: float = 0.2, *, rounding: int = 2) -> float:" in last
    assert "def add(self, item: str, quantity: int = 1, *, discount_code" in last
    start = last[: last.index("basket = Basket()")]
    assert all(p.startswith(start) for p in prompts)  # the same start while typing


def test_a_module_beside_a_notebook_that_never_ran_in_notebook_7(page, lab):
    open_notebook(page, lab.url, "beside/never.ipynb", app="notebook")
    asked_before = len(logged_prompts(lab))
    edit_last_cell(page)
    page.keyboard.type("rows = restock(", delay=20)
    wait_for_ghost_to_settle(page)
    prompts = [p["prompt"] for p in logged_prompts(lab)[asked_before:]]
    assert prompts and "# beside/inventory.py:\n" in prompts[-1], prompts[-1:]
    assert "amount: int = 12, *, warehouse: str = 'main'" in prompts[-1]


def test_code_edited_in_another_notebook_reaches_the_prompt(page, lab):
    """The ring of recently seen code: the cell edited in one notebook opens the prompt of the
    next notebook's suggestions, after the user moved there."""
    open_notebook(page, lab.url, "recent-a.ipynb")
    edit_last_cell(page)
    page.keyboard.type("edited_in_a_xyz = distinctive_helper_xyz([])", delay=10)
    page.evaluate(
        "() => window.jupyterapp.commands.execute('docmanager:open', {path: 'recent-b.ipynb'})"
    )
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget?.context?.path === 'recent-b.ipynb'",
        timeout=60_000,
    )
    page.wait_for_selector(".jp-Spinner", state="detached", timeout=60_000)
    asked_before = len(logged_prompts(lab))
    edit_last_cell(page)
    page.keyboard.type("z = ", delay=20)
    wait_for_ghost_to_settle(page)
    prompts = [p["prompt"] for p in logged_prompts(lab)[asked_before:]]
    assert prompts, "no request reached the engine"
    assert "# recent-a.ipynb:\n# edited_in_a_xyz = distinctive_helper_xyz([])\n" in prompts[-1]
    assert prompts[-1].index("recent-a.ipynb") < prompts[-1].index("y = 2")  # the header


def warm_up_of(cell: int):
    """A predicate for Playwright's request events: the lab's warm-up request for `cell`."""

    def matches(request) -> bool:
        if not request.url.split("?")[0].endswith("/codestral/complete"):
            return False
        body = request.post_data_json or {}
        return bool(body.get("warm")) and body.get("cell") == cell

    return matches


def test_an_emoji_before_the_cursor_splits_the_prompt_at_the_cursor(page, lab, tmp_path):
    """The wire counts code points; JavaScript counts UTF-16 units (an emoji is two). The
    warm-up on entering a cell and typed requests must both split where the cursor is."""
    work = tmp_path / "work"
    work.mkdir()
    write_notebook(work / "emoji.ipynb", ["x = 1", "s = '\U0001f600'\nx = "])
    warm = SETTINGS | {"warmOnFocus": True}
    proc, url = start_lab(tmp_path, lab.root / "runtime", work, warm)  # the same engine
    try:
        open_notebook(page, url, "emoji.ipynb")
        # Each cell entered is warmed up after a pause: wait for that one to be answered
        # (so logged), so that none lands among the next cell's prompts.
        with page.expect_request_finished(warm_up_of(1), timeout=30_000):
            edit_last_cell(page)
            page.keyboard.press("Control+End")  # the cell's end, after the emoji
        with page.expect_request_finished(warm_up_of(0), timeout=30_000):
            page.keyboard.press("Escape")  # command mode; the editor keeps its cursor
            page.keyboard.press("ArrowUp")
        asked = len(logged_prompts(lab))
        page.keyboard.press("ArrowDown")  # entering the cell again warms it up at its cursor
        wait_until(lambda: len(logged_prompts(lab)) > asked, timeout=15, what="the warm-up")
        warmed = logged_prompts(lab)[asked:]
        assert warmed and warmed[-1]["prompt"].endswith("s = '\U0001f600'\nx = "), warmed
        assert warmed[-1]["suffix"] == ""
        page.keyboard.press("Enter")  # edit mode again, at the end
        page.keyboard.press("ArrowUp")
        page.keyboard.press("End")
        page.keyboard.press("ArrowLeft")  # mid-cell, right after the emoji: s = '😀|'
        asked = len(logged_prompts(lab))
        page.keyboard.type("!", delay=20)
        wait_for_ghost_to_settle(page)
        typed = logged_prompts(lab)[asked:]
        assert typed and typed[-1]["prompt"].endswith("s = '\U0001f600!"), typed
        assert typed[-1]["suffix"].startswith("'\nx = ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def run_into_the_error(page, lab, name: str, app: str = "lab") -> None:
    """Open `name`, run all its cells and wait for the NameError's output."""
    open_notebook(page, lab.url, name, app=app)
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status"
        " === 'idle'",
        timeout=60_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".jp-codestral-FixableError", timeout=60_000)
    page.wait_for_selector(".jp-codestral-FixableError >> text=undefined_factor", timeout=30_000)


RECORD_FIX_PANEL = """() => {
    window.__fixStates = [];
    new MutationObserver(() => {
        const panel = document.querySelector('.jp-codestral-FixPanel');
        if (!panel) return;
        const lines = Array.from(panel.querySelectorAll('.cm-content > .cm-line'))
            .map(line => line.textContent).join('\\n');
        const state = panel.dataset.state + ':' + lines;
        const states = window.__fixStates;
        if (states[states.length - 1] !== state) states.push(state);
    }).observe(document.body, {subtree: true, childList: true, characterData: true,
                               attributes: true});
}"""
PROPOSED = """() => Array.from(document.querySelectorAll(
    '.jp-codestral-FixPanel .cm-content > .cm-line')).map(line => line.textContent).join('\\n')"""


def cell_source(page, index: int) -> str:
    return page.evaluate(
        "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]"
        ".model.sharedModel.getSource()",
        index,
    )


def test_fix_with_codestral_streams_a_diff_that_accept_applies_and_undo_restores(page, lab):
    run_into_the_error(page, lab, "broken.ipynb")
    button = page.locator(".jp-codestral-FixButton")
    assert button.inner_text() == "Fix with Codestral"
    page.evaluate(RECORD_FIX_PANEL)
    chats_before = len(logged_prompts(lab, "chat_messages"))
    button.click()
    page.wait_for_selector(".jp-codestral-FixPanel[data-state='done']", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "fix-diff.png"))

    # It streamed: the diff grew through several states before it was done.
    states = page.evaluate("() => window.__fixStates")
    streaming = [s for s in states if s.startswith("streaming:") and s != "streaming:"]
    assert len(set(streaming)) >= 2, states
    # A diff against the cell: its line shows as deleted, the proposal as the editor's text.
    deleted = page.locator(".jp-codestral-FixPanel .cm-deletedChunk").all_inner_texts()
    assert any("undefined_factor" in text for text in deleted), deleted
    proposed = page.evaluate(PROPOSED)
    assert proposed.strip() and proposed != BROKEN_CELLS[1]
    # What the engine was asked: the cell, its error, the cell above.
    asked = logged_prompts(lab, "chat_messages")[chats_before:]
    assert len(asked) == 1
    system, user = (m["content"] for m in asked[0]["messages"])
    assert "whole corrected cell" in system
    assert BROKEN_CELLS[1] in user and BROKEN_CELLS[0] in user
    assert "NameError: name 'undefined_factor' is not defined" in user and "\x1b" not in user

    page.locator(".jp-codestral-FixPanel button", has_text="Accept").click()
    page.wait_for_selector(".jp-codestral-FixPanel", state="detached")
    assert cell_source(page, 1) == proposed
    assert "Fix applied" in page.locator(".jp-codestral-FixBar-note").inner_text()
    # One undo step restores the cell.
    page.evaluate(
        """() => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.activeCellIndex = 1;
        notebook.mode = 'edit';
        notebook.activeCell.editor.focus();
    }"""
    )
    page.keyboard.press("Control+z")
    page.wait_for_function(
        "(s) => window.jupyterapp.shell.currentWidget.content.widgets[1]"
        ".model.sharedModel.getSource() === s",
        arg=BROKEN_CELLS[1],
        timeout=10_000,
    )

    # Reject leaves the cell as it is; Stop cancels the engine's request.
    button.click()
    page.wait_for_selector(".jp-codestral-FixPanel[data-state='done']", timeout=60_000)
    page.locator(".jp-codestral-FixPanel button", has_text="Reject").click()
    page.wait_for_selector(".jp-codestral-FixPanel", state="detached")
    assert cell_source(page, 1) == BROKEN_CELLS[1]


def test_stop_cancels_the_fix_while_it_streams(page, lab):
    run_into_the_error(page, lab, "broken-long.ipynb")  # a long cell: a long answer
    cancelled = engine_status(lab)["finished_requests"].get("cancelled", 0)
    page.locator(".jp-codestral-FixButton").click()
    page.wait_for_selector(
        ".jp-codestral-FixPanel[data-state='streaming'] .cm-line", timeout=60_000
    )
    page.locator(".jp-codestral-FixPanel button", has_text="Stop").click()
    page.wait_for_selector(".jp-codestral-FixPanel[data-state='stopped']")
    assert page.locator(".jp-codestral-FixPanel button", has_text="Accept").is_hidden()
    wait_until(lambda: engine_status(lab)["finished_requests"].get("cancelled", 0) > cancelled)
    assert cell_source(page, 1) == LONG_BROKEN_CELLS[1]


def test_fix_in_notebook_7_from_the_keyboard_shortcut(page, lab):
    run_into_the_error(page, lab, "broken.ipynb", app="notebook")
    assert page.locator(".jp-codestral-FixButton").is_visible()
    page.evaluate(
        """() => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.activeCellIndex = 1;
        notebook.mode = 'command';
        notebook.node.focus();
    }"""
    )
    page.keyboard.press("Alt+Shift+F")
    page.wait_for_selector(".jp-codestral-FixPanel[data-state='done']", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "fix-notebook7.png"))
    assert page.locator(".jp-codestral-FixPanel button", has_text="Accept").is_visible()


def test_hints_mode_explains_the_error_instead_of_rewriting_the_cell(page, lab):
    run_into_the_error(page, lab, "broken-hints.ipynb")
    button = page.locator(".jp-codestral-FixButton")
    assert button.inner_text() == "Explain with Codestral"
    chats_before = len(logged_prompts(lab, "chat_messages"))
    button.click()
    page.wait_for_selector(".jp-codestral-FixPanel[data-state='done']", timeout=60_000)
    assert page.locator(".jp-codestral-FixPanel-explanation").inner_text().strip()
    assert page.locator(".jp-codestral-FixPanel .cm-editor").count() == 0  # no diff
    assert page.locator(".jp-codestral-FixPanel button", has_text="Accept").is_hidden()
    system = logged_prompts(lab, "chat_messages")[chats_before]["messages"][0]["content"]
    assert "one or two short sentences" in system and "Do not write the corrected code" in system
    page.locator(".jp-codestral-FixPanel button", has_text="Close").click()
    assert cell_source(page, 1) == BROKEN_CELLS[1]


def test_no_fix_action_where_the_notebook_turns_codestral_off(page, lab):
    run_into_the_error(page, lab, "broken-exam.ipynb")
    assert page.locator(".jp-codestral-FixableError .jp-RenderedText").is_visible()  # traceback
    assert page.locator(".jp-codestral-FixBar").is_hidden()
    # Turning it back on in the metadata shows the action at once; the command follows too.
    page.evaluate("() => window.jupyterapp.shell.currentWidget.model.setMetadata('codestral', {})")
    page.wait_for_selector(".jp-codestral-FixButton", state="visible", timeout=5_000)
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.model"
        ".setMetadata('codestral', {enabled: false})"
    )
    page.wait_for_selector(".jp-codestral-FixBar", state="hidden", timeout=5_000)
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 1; }")
    assert not page.evaluate("() => window.jupyterapp.commands.isEnabled('codestral:fix-cell')")
