"""How to ask Codestral for a fix: an instruct request for the whole cell (what the lab and
`%codestral fix` send) against FIM over the failing line (the alternative the issue named).

Quality needs the real weights, which this machine does not have. What can be measured here is
structural: on typical notebook failures, with the fix a person would make, how many fixes
FIM over the failing line can express at all (a fix that adds an import, a `global` line or
touches another line cannot be written into that gap), what each request costs in prompt
tokens (Codestral's tokenizer), and how long the route takes to build the instruct request.
Each cell runs for real to find its failing line and traceback.
Usage: python bench/bench_fix.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codestral_engine import codestral_tokenizer
from jupyter_codestral.context import fix
from jupyter_codestral.context.notebook import Cell, ContextBuilder, TokenCounter

SETUP = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'region': ['north', 'south'], 'amount': [1.5, 2.5]})\n"
)
# (what goes wrong, the failing cell, the cell as a person would fix it)
CASES = [
    ("misspelt name", "totl = 0\nfor x in [1, 2]:\n    totl += x\nprint(total)",
     "totl = 0\nfor x in [1, 2]:\n    totl += x\nprint(totl)"),
    ("missing import", "arr = np.array([1, 2])\nprint(arr.mean())",
     "import numpy as np\narr = np.array([1, 2])\nprint(arr.mean())"),
    ("misspelt column", "sales['amout'].sum()", "sales['amount'].sum()"),
    ("wrong method", "sales.groupby('region').amount.summ()",
     "sales.groupby('region').amount.sum()"),
    ("str + float", "label = 'total: ' + sales['amount'].sum()",
     "label = 'total: ' + str(sales['amount'].sum())"),
    ("bug inside a function", "def mean(xs):\n    return sum(xs) / len(x)\n\nprint(mean([1, 2]))",
     "def mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([1, 2]))"),
    ("used before defined", "print(total)\ntotal = 3", "total = 3\nprint(total)"),
    ("off-by-one bound", "xs = [1, 2, 3]\nfor i in range(len(xs) + 1):\n    print(xs[i])",
     "xs = [1, 2, 3]\nfor i in range(len(xs)):\n    print(xs[i])"),
    ("empty list mean", "counts = []\nmean = sum(counts) / len(counts)",
     "counts = []\nmean = sum(counts) / len(counts) if counts else 0.0"),
    ("wrong import name", "from math import sqroot\nprint(sqroot(4))",
     "from math import sqrt\nprint(sqrt(4))"),
    ("missing global", "count = 0\n\ndef bump():\n    count += 1\n\nbump()",
     "count = 0\n\ndef bump():\n    global count\n    count += 1\n\nbump()"),
    ("missing argument", "def area(r, pi):\n    return pi * r * r\n\narea(2)",
     "def area(r, pi=3.14159):\n    return pi * r * r\n\narea(2)"),
]  # fmt: skip


def failing_line(cell: str) -> tuple[int, BaseException]:
    """Run the cell; the 0-based line of its innermost frame in the cell, and the error."""
    namespace: dict = {}
    exec(SETUP, namespace)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell, "<cell>", "exec"), namespace)
    except Exception as exc:  # every case raises: that is the point
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<cell>"]
        return frames[-1].lineno - 1, exc
    raise AssertionError(f"the cell did not fail: {cell!r}")


def fim_can_express(cell: str, fixed: str, line: int) -> bool:
    """Whether the fix only rewrites the failing line (all FIM over that line can do)."""
    before, after = cell.splitlines(), fixed.splitlines()
    changes = [
        op for op in difflib.SequenceMatcher(None, before, after).get_opcodes() if op[0] != "equal"
    ]
    return all(op[0] == "replace" and op[1] == line and op[2] == line + 1 for op in changes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    tokenizer = codestral_tokenizer()
    count = TokenCounter(tokenizer.count)
    builder = ContextBuilder(count, budget=2048)
    above = [Cell("markdown", "# Sales"), Cell("code", SETUP)]
    rows, build_ms, cold_ms = [], [], []
    for what, cell, fixed in CASES:
        line, error = failing_line(cell)
        # As IPython names a notebook cell's frames.
        formatted = traceback.format_exception(error)
        lines = [s.replace('File "<cell>"', "Cell In[5]") for s in formatted]
        failed = fix.from_error_output(cell, type(error).__name__, str(error), lines)
        cells = [*above, Cell("code", "")]
        start = time.perf_counter()
        for _ in range(args.repeats):
            around = builder.build(cells, len(above), 0)
            messages = fix.fix_messages(failed, [], above=around.prefix, below=around.suffix)
        build_ms.append((time.perf_counter() - start) * 1000 / args.repeats)
        start = time.perf_counter()  # a fresh token-count cache: the notebook's first request
        fresh = ContextBuilder(TokenCounter(tokenizer.count), budget=2048).build(cells, 2, 0)
        fix.fix_messages(failed, [], above=fresh.prefix, below=fresh.suffix)
        cold_ms.append((time.perf_counter() - start) * 1000)
        instruct = sum(count(m["content"]) for m in messages)
        source = cell.splitlines(keepends=True)
        prefix = around.prefix + "".join(source[:line])
        suffix = "".join(source[line + 1 :])
        rows.append(
            (
                what,
                type(error).__name__,
                fim_can_express(cell, fixed, line),
                instruct,
                count(prefix) + count(suffix),
            )
        )

    print(f"machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}")
    print(f"{'failure':24} {'error':18} {'FIM can':>8} {'instruct':>9} {'FIM':>5}  (tokens)")
    for what, error, fim, instruct, fim_tokens in rows:
        print(f"{what:24} {error:18} {'yes' if fim else 'no':>8} {instruct:>9} {fim_tokens:>5}")
    expressible = sum(r[2] for r in rows)
    print(
        f"FIM over the failing line can express {expressible} of {len(rows)} fixes; "
        f"the instruct request all {len(rows)}."
    )
    print(
        f"prompt tokens, median: instruct {statistics.median(r[3] for r in rows):.0f}, "
        f"FIM {statistics.median(r[4] for r in rows):.0f}"
    )
    print(
        f"building the instruct request (context, traceback, messages): median "
        f"{statistics.median(cold_ms):.2f} ms with a fresh token-count cache, "
        f"{statistics.median(build_ms):.3f} ms warm"
    )


if __name__ == "__main__":
    main()
