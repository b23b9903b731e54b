"""What the kernel-facts probe costs: its time in a real kernel after an execution (what a cell
run right after it waits for), and the prompt tokens its header adds on the example notebook.

The kernel first runs the example notebook's Python cells (data_science.ipynb; the magics are
left out), then the probe runs as the extension sends it, --repeats times: the first run
includes defining the probe in the kernel. Also timed: the same probe in a namespace with 200
DataFrames of 10,000 columns each (the bound).
Usage: python bench/bench_facts.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbformat
from jupyter_client.manager import start_new_kernel

from codestral_engine import codestral_tokenizer
from jupyter_codestral.context.kernel_facts import probe_request
from jupyter_codestral.context.notebook import Cell, ContextBuilder, TokenCounter
from tests.helpers import run_in_kernel

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "data_science.ipynb"
WIDE = "import numpy as np, pandas as pd\n" + "\n".join(
    f"wide_{i} = pd.DataFrame(np.zeros((2, 10_000)))" for i in range(200)
)


def probe_ms(kc, names: list[str]) -> tuple[float, list[str]]:
    request = probe_request()
    expression = request["expression"].replace("NAMES", json.dumps(names))
    start = time.perf_counter()
    kc.execute(
        request["setup"],
        silent=True,
        store_history=False,
        user_expressions={"codestral": expression},
    )
    reply = kc.get_shell_msg(timeout=60)
    elapsed = (time.perf_counter() - start) * 1000
    facts = json.loads(reply["content"]["user_expressions"]["codestral"]["data"]["text/plain"])
    return elapsed, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    nb = nbformat.read(EXAMPLE, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    python = [s for s in code if not s.lstrip().startswith("%")]
    words = [w for s in code for w in re.findall(r"\b[A-Za-z_]\w*\b", s)]
    names = list(dict.fromkeys(w for w in words if not w.startswith("_")))
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        for source in python:
            assert run_in_kernel(kc, source)[0]["status"] == "ok"
        first, facts = probe_ms(kc, names)
        times = [probe_ms(kc, names)[0] for _ in range(args.repeats)]
        assert run_in_kernel(kc, WIDE)[0]["status"] == "ok"
        wide_names = [f"wide_{i}" for i in range(200)] + names
        wide = [probe_ms(kc, wide_names)[0] for _ in range(5)]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    builder = ContextBuilder(TokenCounter(codestral_tokenizer().count))
    cells = [Cell("code", s) for s in code] + [Cell("code", "total = ")]
    cursor = len("total = ")
    plain = builder.build(cells, len(cells) - 1, cursor)
    with_facts = builder.build(cells, len(cells) - 1, cursor, facts=facts)
    tokenizer = codestral_tokenizer()
    extra = len(tokenizer.encode_fim(with_facts.prefix, with_facts.suffix)) - len(
        tokenizer.encode_fim(plain.prefix, plain.suffix)
    )
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"example notebook: {len(names)} names asked, {len(facts)} facts:")
    for line in facts:
        print(f"  # {line}")
    print(
        f"probe round trip (ms): first {first:.1f} (defines it), then median "
        f"{statistics.median(times):.1f}, max {max(times):.1f} over {args.repeats}"
    )
    print(f"with 200 DataFrames of 10,000 columns: median {statistics.median(wide):.1f} ms")
    print(
        f"header: {with_facts.facts} facts, {extra} extra prompt tokens "
        f"({len(tokenizer.encode_fim(plain.prefix, plain.suffix))} without)"
    )


if __name__ == "__main__":
    main()
