"""Keystroke to first ghost text, in a real browser: the engine's prompt cache on vs off.

One run starts, for each side, the engine on the same tiny model (`--prompt-cache-entries 8`
vs `0`), a real `jupyter lab` with this package's extensions and headless Chromium, opens a
notebook of ~1,800 tokens of context and types 50 keys into its last cell, one at a time. For
each key it times, in the page, from the keydown event to the first ghost text of the new
suggestion (a MutationObserver). Keys whose suggestion came from typed-ahead reuse (the key
matched the visible ghost text, no request) are counted apart. Debounce is set to 0 so the
numbers are the pipeline's own; users add their debounce (150 ms by default).

A third run keeps the cache on and turns the kernel facts off: before typing, every run first
executes the notebook (its cells define arrays and a DataFrame), so with facts on the prompt
opens with the kernel's live objects; the difference per keystroke should be about nothing,
since the header does not change while typing.

Usage: python bench/bench_ghost.py [--keys 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright

from codestral_engine.weights.tiny import make_tiny
from tests.helpers import TOKEN, start_server
from tests.lab_session import (
    CHROMIUM,
    CHROMIUM_ARGS,
    GHOST,
    edit_last_cell,
    open_notebook,
    start_lab,
    write_notebook,
)

SETTINGS = {"debounceMs": 0, "maxTokens": 16}
TYPED = "total_value = compute_metrics(frame, weights) + offset_term * scale_factor - bias"
OBSERVER = """(selector) => {
    const ghost = () => Array.from(document.querySelectorAll(selector))
        .map(e => e.textContent).join('');
    const b = window.__bench = {t0: null, cleared: false, first: null, shown: false};
    document.addEventListener('keydown', () => {
        b.t0 = performance.now(); b.cleared = false; b.first = null; b.shown = !!ghost();
    }, true);
    new MutationObserver(() => {
        if (b.t0 === null || b.first !== null) return;
        const text = ghost();
        if (!text) b.cleared = true;
        else if (b.cleared || !b.shown) b.first = performance.now();
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def context_cells() -> list[str]:
    cells = [
        "md:# Quarterly metrics\nEach cell below computes one table.",
        "import pandas as pd\nsales = pd.DataFrame({'region': ['n', 's'], 'amount': [1.0, 2.0]})",
    ]
    for i in range(30):
        cells.append(
            f"import numpy as np\nframe_{i} = np.arange({i * 10}, {i * 10 + 50})\n"
            f"weights_{i} = frame_{i} / frame_{i}.sum()\nprint(weights_{i}.mean())"
        )
    return [*cells, ""]


def measure(model: Path, root: Path, cache_entries: int, keys: int, facts: bool = True) -> dict:
    runtime, work = root / "runtime", root / "work"
    runtime.mkdir(parents=True)
    work.mkdir()
    write_notebook(work / "bench.ipynb", context_cells())
    engine = start_server(
        model,
        runtime,
        "--token",
        TOKEN,
        "--prompt-cache-entries",
        str(cache_entries),
        log=root / "engine.log",
    )
    lab, url = start_lab(root, runtime, work, SETTINGS | {"kernelFacts": facts})
    latencies, reused = [], 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            open_notebook(page, url, "bench.ipynb")
            page.wait_for_function(
                "() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel"
                "?.status === 'idle'",
                timeout=60_000,
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_timeout(5000)  # the cells run, then the probe (with facts on)
            edit_last_cell(page)
            page.evaluate(OBSERVER, GHOST)
            page.keyboard.type("x = ", delay=200)  # warm-up: the first prefill of the notebook
            page.wait_for_timeout(2000)
            for ch in (TYPED * 2)[:keys]:
                page.keyboard.type(ch)
                try:
                    page.wait_for_function("() => window.__bench.first !== null", timeout=5000)
                except Exception:
                    reused += 1  # no fresh suggestion appeared: the old one was consumed
                    continue
                latencies.append(page.evaluate("() => window.__bench.first - window.__bench.t0"))
                page.wait_for_timeout(250)  # let the suggestion finish before the next key
            browser.close()
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(timeout=30)
        engine.proc.send_signal(signal.SIGTERM)
        engine.proc.wait(timeout=30)
    latencies.sort()
    return {
        "n": len(latencies),
        "reused": reused,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "model", "hf", seed=0)
        on = measure(model, Path(tmp) / "on", 8, args.keys)
        off = measure(model, Path(tmp) / "off", 0, args.keys)
        no_facts = measure(model, Path(tmp) / "no-facts", 8, args.keys, facts=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    reuse = f"on {on['reused']}, off {off['reused']}"
    print(f"keys: {args.keys}; typed-ahead reuse (no request): {reuse}")
    print("| prompt cache | keys timed | p50 (ms) | p95 (ms) |")
    print("|---|---:|---:|---:|")
    for name, r in (("on", on), ("off", off)):
        print(f"| {name} | {r['n']} | {r['p50']:.0f} | {r['p95']:.0f} |")
    print(f"off/on: p50 {off['p50'] / on['p50']:.2f}x, p95 {off['p95'] / on['p95']:.2f}x")
    print(
        f"kernel facts off (cache on): {no_facts['n']} keys, p50 {no_facts['p50']:.0f} ms, "
        f"p95 {no_facts['p95']:.0f} ms; facts on minus off: p50 "
        f"{on['p50'] - no_facts['p50']:+.0f} ms"
    )


if __name__ == "__main__":
    main()
