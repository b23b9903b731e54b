"""`codestral-engine pull` against a fake hub on loopback, and hub ids that load offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from codestral_engine import hub
from codestral_engine.weights.tiny import make_tiny

from .fake_hub import FakeHub
from .helpers import run_cli

REPO = "test-org/Codestral-tiny"


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("release") / "native", "mistral", seed=0)


@pytest.fixture
def fake_hub(tiny_release):
    server = FakeHub(REPO, tiny_release)
    url = server.start()
    server.url = url
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path, fake_hub):
    return {
        **os.environ,
        "HF_ENDPOINT": fake_hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_TOKEN": "",
    }


def snapshot_file(env, name: str):
    root = os.path.join(env["HF_HOME"], "hub", "models--test-org--Codestral-tiny", "snapshots")
    (commit,) = os.listdir(root)
    return os.path.join(root, commit, name)


def test_pull_shows_the_licence_once_downloads_with_progress_and_loads_offline(
    env, fake_hub, tiny_release
):
    refused = run_cli("pull", "--repo", REPO, input_text="n\n", env=env)
    assert refused.returncode == 1
    assert "Non-Production License" in refused.stdout and "not accepted" in refused.stderr
    assert not any(m == "GET" and "/resolve/" in p for m, p, _ in fake_hub.requests)

    done = run_cli("pull", "--repo", REPO, "--accept-license", env=env)
    assert done.returncode == 0, done.stderr
    assert "Non-Production License" in done.stdout
    assert "Verifying" in done.stderr and "B/s" in done.stderr  # progress with size and rate
    for name in ("params.json", "consolidated.safetensors", "tokenizer.model.v3"):
        with open(snapshot_file(env, name), "rb") as f:
            assert f.read() == (tiny_release / name).read_bytes()
    licences = json.loads(
        (Path(env["XDG_CONFIG_HOME"]) / "codestral-engine" / "licenses.json").read_text()
    )
    assert licences["mnpl"]["first_download"] == REPO  # accepted once, for every Codestral

    again = run_cli("pull", "--repo", REPO, env=env)  # accepted before: no licence, no question
    assert again.returncode == 0 and "Non-Production License" not in again.stdout

    fake_hub.stop()  # offline: the hub id resolves from the cache
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    out = run_cli(
        "complete",
        "--model",
        REPO,
        "--prompt",
        "def f(",
        "--max-tokens",
        "3",
        "--json",
        env=offline,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["usage"]["completion_tokens"] == 3


def test_an_interrupted_download_resumes(env, fake_hub, tiny_release):
    fake_hub.interrupt = True
    done = run_cli("pull", "--repo", REPO, "--accept-license", env=env)
    assert done.returncode == 0, done.stderr
    ranges = [r for m, p, r in fake_hub.requests if m == "GET" and "consolidated" in p and r]
    assert ranges and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-"
    with open(snapshot_file(env, "consolidated.safetensors"), "rb") as f:
        assert f.read() == (tiny_release / "consolidated.safetensors").read_bytes()


def test_a_corrupted_file_is_detected_and_downloaded_again(env, fake_hub, tiny_release):
    fake_hub.corrupt_once = {"consolidated.safetensors"}  # the first transfer is damaged
    done = run_cli("pull", "--repo", REPO, "--accept-license", env=env)
    assert done.returncode == 0, done.stderr
    assert "does not match its published sha256" in done.stdout
    with open(snapshot_file(env, "consolidated.safetensors"), "rb") as f:
        assert f.read() == (tiny_release / "consolidated.safetensors").read_bytes()

    # Damaged on disk later: the next pull finds and repairs it.
    path = os.path.realpath(snapshot_file(env, "consolidated.safetensors"))
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    again = run_cli("pull", "--repo", REPO, env=env)
    assert again.returncode == 0 and "does not match" in again.stdout
    with open(snapshot_file(env, "consolidated.safetensors"), "rb") as f:
        assert f.read() == (tiny_release / "consolidated.safetensors").read_bytes()


def test_a_gated_repository_says_what_to_do(env, fake_hub):
    fake_hub.gated = True
    out = run_cli("pull", "--repo", REPO, "--accept-license", env=env)
    assert out.returncode == 1
    assert "gated repository" in out.stderr and "hf auth login" in out.stderr
    assert f"{fake_hub.url}/{REPO}" in out.stderr  # the page where the licence is accepted
    with_token = run_cli("pull", "--repo", REPO, env={**env, "HF_TOKEN": "hf_test"})
    assert "accept the licence on the model page" in with_token.stderr


def test_a_hub_id_not_in_the_cache_says_to_pull(env):
    out = run_cli(
        "complete",
        "--model",
        "someone/Codestral-x",
        "--prompt",
        "x",
        env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 1
    assert "not downloaded yet" in out.stderr and "codestral-engine pull" in out.stderr


def test_the_automatic_choice_follows_backend_and_memory():
    gb = 1_000_000_000
    assert hub.choose("mlx", None, 64 * gb).repo.endswith("-8bit")
    assert hub.choose("mlx", None, 16 * gb).repo.endswith("-4bit")
    assert hub.choose("torch", None, 80 * gb) == hub.Choice(hub.MISTRAL_RELEASE, "bf16", "torch")
    int8 = hub.choose("torch", None, 40 * gb)
    assert int8.quant == "8bit" and "--quantize int8" in int8.note
    small = hub.choose("mlx", None, 8 * gb)
    assert small.quant == "4bit" and "can give 8 GB" in small.note
    int4 = hub.choose("torch", None, 20 * gb)  # bf16's release, held as int4
    assert int4 == hub.Choice(hub.MISTRAL_RELEASE, "4bit", "torch", int4.note)
    assert "--quantize int4" in int4.note
    with pytest.raises(hub.HubError, match="No 2bit checkpoint for the torch backend"):
        hub.choose("torch", "2bit", None)


def test_without_a_model_setting_all_four_serve_the_pulled_release(env, tiny_release, tmp_path):
    release = FakeHub(hub.MISTRAL_RELEASE, tiny_release)
    url = release.start()
    try:
        env = {**env, "HF_ENDPOINT": url}
        env["CODESTRAL_MODEL"] = ""  # run_cli adds env to this process's environment
        done = run_cli("pull", "--backend", "torch", "--quant", "bf16", "--accept-license", env=env)
        assert done.returncode == 0, done.stderr
        assert f"Chose {hub.MISTRAL_RELEASE}" in done.stdout
    finally:
        release.stop()
    env = {**env, "HF_HUB_OFFLINE": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    out = run_cli("complete", "--prompt", "x", "--max-tokens", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert f"Serving {hub.MISTRAL_RELEASE}, downloaded by `codestral-engine pull`" in out.stderr
    # The magic, JupyterLab's link and the demo follow the same rule.
    snapshot = "models--mistralai--Codestral-22B-v0.1"
    magic = run_python(env, MAGIC_MODEL)
    assert snapshot in magic, magic
    lab = run_python(env, LAB_MODEL)
    assert snapshot in lab and f"Serving {hub.MISTRAL_RELEASE}" in lab, lab
    notebook = tmp_path / "which.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(DEMO_CELL)]), notebook)
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_codestral.demo",
            "demo",
            "--headless",
            "--notebook",
            str(notebook),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert snapshot in demo.stdout.split("--- Out:")[-1], demo.stdout


MAGIC_MODEL = """
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "jupyter_codestral")
ip.run_line_magic("config", "Codestral.engine = 'in-process'")
ip.run_line_magic("codestral", "status")
ip.run_line_magic("codestral", "start")
ip.run_line_magic("codestral", "stop")
"""
LAB_MODEL = """
import asyncio, logging, os, signal, sys
from codestral_engine import connection
from jupyter_codestral.lab.engine_link import CodestralCompletion, EngineLink
logging.basicConfig(stream=sys.stdout)

async def main():
    link = EngineLink(CodestralCompletion())
    link.start()
    await link._starting
    info = connection.read_live()
    print(info.model)
    os.kill(info.pid, signal.SIGTERM)

asyncio.run(main())
"""
DEMO_CELL = "from codestral_engine import connection\nprint(connection.read_live().model)"


def run_python(env, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr
