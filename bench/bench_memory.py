"""How much memory Codestral needs, and how good the preflight's estimate is.

1. Computed for the real Codestral-22B architecture, per precision: weights, KV cache per 1K
   tokens, and the preflight total for an 8K and the full 32K window.
2. Measured: the PyTorch backend on the CPU loads a model (stored in the precision it runs in,
   as Codestral ships bf16) and runs a ~1,000-token prompt in a fresh process; its peak RSS
   growth over the process with its libraries imported (sampled every 20 ms), against the
   preflight estimate for the same window. Usage: python bench/bench_memory.py
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from codestral_engine.assembly.preflight import ACTIVATION_MARGIN, codestral_22b_plans, plan
from codestral_engine.weights.checkpoint import inspect
from codestral_engine.weights.tiny import TinyShape, make_tiny

MID_SHAPE = {
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 64,
}
WINDOW = 1100  # the measured run: ~1,000 prompt tokens + 32 generated
MEASURE = """
import json, sys, threading, time
import psutil
import codestral_engine
import codestral_engine.backends.torch  # libraries are loaded before the baseline
import codestral_engine.core.engine

process, peak, done = psutil.Process(), [0, 0], threading.Event()

def sample():
    m = process.memory_info()  # rss, and anonymous = rss minus file-backed (mapped weights)
    peak[0], peak[1] = max(peak[0], m.rss), max(peak[1], m.rss - m.shared)

def poll():
    while not done.is_set():
        sample()
        time.sleep(0.02)

start = process.memory_info()
threading.Thread(target=poll, daemon=True).start()
model, options, window = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
engine = codestral_engine.load(model, "torch", context_length=window, **options)
engine.fim("def double(x):\\n    return x * 2\\n\\n" * 70, max_tokens=32).result()
done.set()
sample()
anon = peak[1] - (start.rss - start.shared)
print(json.dumps({"growth": peak[0] - start.rss, "anonymous": anon}))
"""


def computed_table() -> None:
    plans = codestral_22b_plans(1)
    rows = [
        ("bf16 (torch or MLX)", plans["bf16"]),
        ("int8 weights (torch)", plans["int8"]),
        ("MLX 8-bit", plans["mlx-8bit"]),
        ("MLX 4-bit", plans["mlx-4bit"]),
    ]
    print(
        "| Codestral-22B | weights (GB) | KV per 1K tokens (MB) | total, 8K window | total, 32K |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, p in rows:
        kv_1k = p.kv_bytes_per_token * 1024 / 1e6
        eight, full = p.with_context(8192).total / 1e9, p.with_context(32768).total / 1e9
        weights = p.weight_bytes / 1e9
        print(f"| {name} | {weights:.1f} | {kv_1k:.0f} | {eight:.1f} GB | {full:.1f} GB |")


def measured_table() -> None:
    root = Path(tempfile.mkdtemp())
    # Stored as they will run (Codestral ships bf16): float32 rows read a float32 file.
    variants = {
        "float32": ("float32", {"dtype": "float32"}),
        "bfloat16": ("bfloat16", {"dtype": "bfloat16"}),
        "int8": ("bfloat16", {"dtype": "bfloat16", "quantize": "int8"}),
    }
    shapes = {"tiny (6.5M)": TinyShape(), "~202M": TinyShape(**MID_SHAPE)}
    print(
        "\n| model | precision | preflight estimate (MB) | peak RSS growth (MB) "
        "| of which anonymous (MB) | estimate / RSS |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, shape in shapes.items():
        for label, (stored, options) in variants.items():
            path = root / f"{name[:4]}-{stored}"
            if not path.exists():
                make_tiny(path, "hf", shape=shape, dtype=stored)
            checkpoint = inspect(path)
            need = plan(checkpoint, "torch", options["dtype"], options.get("quantize"), WINDOW)
            command = [sys.executable, "-c", MEASURE, str(path), json.dumps(options), str(WINDOW)]
            output = subprocess.check_output(command, stderr=subprocess.DEVNULL)
            got = json.loads(output)
            cells = (
                f"{need.total / 1e6:.0f} | {got['growth'] / 1e6:.0f} | {got['anonymous'] / 1e6:.0f}"
            )
            print(f"| {name} | {label} | {cells} | {need.total / got['growth']:.2f} |")


def main() -> None:
    print(f"Machine: {platform.platform()}, {platform.machine()}; margin {ACTIVATION_MARGIN:.0%}\n")
    computed_table()
    measured_table()


if __name__ == "__main__":
    main()
