"""The engine server's life at its edges, on real `serve` processes: how it ends (a signal, the
idle timeout) without passing a cut answer off as complete, and connection files that cannot
lie (deleted, garbage, or naming a process that is not our engine)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from jupyter_client.manager import start_new_kernel
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from codestral_engine import connection
from jupyter_codestral.client.engine_client import EngineClient, stop_local_server
from jupyter_codestral.errors import CodestralError

from .helpers import run_in_kernel, start_server, wait_until, wait_until_async

ENDLESS = {"prompt": "while True:\n", "min_tokens": 30000, "max_tokens": 30000}


def auth(srv) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.token}"}


def test_sigterm_mid_stream_is_an_error_the_mistral_sdk_raises(models, tmp_path):
    """A stream still running when the grace period ends is cut with Mistral's error shape
    in the stream: the SDK raises, never returning the partial text as an answer."""
    srv = start_server(
        models["mlx"],
        tmp_path,
        log=tmp_path / "engine.log",
        extra_env={"CODESTRAL_ENGINE_SHUTDOWN_GRACE_S": "1"},
    )
    mistral = Mistral(api_key=srv.token, server_url=srv.url)
    stream = iter(mistral.fim.stream(model="codestral-latest", **ENDLESS))
    next(stream)  # decoding
    srv.proc.send_signal(signal.SIGTERM)
    with pytest.raises(MistralError) as cut:
        for _event in stream:
            pass
    assert "cut this answer short while exiting" in cut.value.body, cut.value.body
    assert json.loads(cut.value.body)["data"]["type"] == "engine_stopped", cut.value.body
    assert srv.proc.wait(timeout=60) == 0
    assert not srv.conn.exists()
    assert f"pid {srv.pid}" in (tmp_path / "engine.log").read_text()


def test_sigterm_lets_running_requests_finish_and_refuses_new_ones(models, tmp_path):
    """Within the grace period a running stream ends normally ([DONE]); a request that
    arrives meanwhile is refused with a retryable 503; then the server exits."""
    srv = start_server(
        models["mlx"],
        tmp_path,
        log=tmp_path / "engine.log",
        extra_env={"CODESTRAL_ENGINE_SHUTDOWN_GRACE_S": "300"},
    )
    body = {"model": "codestral-latest", "prompt": "def f(x):\n", "stream": True,
            "min_tokens": 200, "max_tokens": 200}  # fmt: skip
    with httpx.stream(
        "POST", srv.url + "/v1/fim/completions", json=body, headers=auth(srv), timeout=120
    ) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
        srv.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not srv.conn.exists(), what="the server to start exiting")
        refused = httpx.post(
            srv.url + "/v1/fim/completions",
            headers=auth(srv),
            timeout=60,
            json={"model": "codestral-latest", "prompt": "x"},
        )
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["type"] == "engine_stopped", refused.text
        assert f"pid {srv.pid}" in refused.json()["message"]
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["choices"][0]["finish_reason"] == "length"
    assert srv.proc.wait(timeout=60) == 0


def test_the_client_reports_a_cut_stream_as_an_error(models, tmp_path):
    """Our own client (the magic's and the lab's): a cut is a CodestralError naming it."""
    srv = start_server(
        models["mlx"],
        tmp_path,
        log=tmp_path / "engine.log",
        extra_env={"CODESTRAL_ENGINE_SHUTDOWN_GRACE_S": "0"},
    )
    with EngineClient(srv.url, srv.token) as client:
        chunks = client.fim(ENDLESS["prompt"], stream=True, min_tokens=30000, max_tokens=30000)
        next(chunks)
        srv.proc.send_signal(signal.SIGTERM)
        with pytest.raises(CodestralError) as cut:
            for _chunk in chunks:
                pass
    assert cut.value.kind == "engine_stopped" and "cut this answer short" in str(cut.value)
    srv.proc.wait(timeout=60)


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_a_lost_connection_file_is_restored_and_orphans_nothing(
    models, tmp_path, monkeypatch, damage
):
    """The running engine writes its file again; a client that looks meanwhile reaches the
    same engine (the serve it starts finds it) instead of waiting and failing."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    srv = start_server(models["mlx"], tmp_path, log=tmp_path / "engine.log")
    if damage == "delete":
        srv.conn.unlink()
    else:
        srv.conn.write_text("{not json")
    with EngineClient.local(str(models["mlx"]), progress=False) as client:
        assert client.status().pid == srv.pid
    wait_until(lambda: connection.read_live() is not None, what="the file to be restored")
    assert connection.read_live().pid == srv.pid
    holder = connection.ServerLock.holder()
    assert holder["pid"] == srv.pid and holder["url"] == srv.url
    assert "wrote it again (pid" in (tmp_path / "engine.log").read_text()
    assert stop_local_server().pid == srv.pid
    assert srv.proc.wait(timeout=60) == 0


@pytest.fixture
def stranger():
    """A live process that is not our engine."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def unrelated_files(stranger) -> list[dict]:
    """Connection files naming `stranger`: as an older version wrote them (no start time),
    and with its true start time (only the command line tells it is not an engine)."""
    base = {"url": "http://127.0.0.1:9", "token": "t", "pid": stranger.pid, "model": "m"}
    return [base, base | {"started": psutil.Process(stranger.pid).create_time()}]


def test_stop_never_signals_a_process_not_verified_as_our_engine(tmp_path, stranger):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        run_in_kernel(kc, "%load_ext jupyter_codestral")
        for file in unrelated_files(stranger):
            (tmp_path / "codestral-engine.json").write_text(json.dumps(file))
            reply, messages = run_in_kernel(kc, "%codestral stop")
            assert reply["status"] == "ok", reply
            printed = "".join(m["content"].get("text", "") for m in messages)
            assert "no shared engine is running" in printed, printed
            assert stranger.poll() is None  # alive
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_serve_starts_over_a_file_naming_an_unrelated_process(models, tmp_path, stranger):
    for file in unrelated_files(stranger):
        (tmp_path / "codestral-engine.json").write_text(json.dumps(file))
        srv = start_server(models["mlx"], tmp_path, log=tmp_path / "engine.log")
        assert srv.pid == srv.proc.pid != stranger.pid
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
        assert stranger.poll() is None


def test_the_magic_retries_once_on_a_fresh_engine_after_an_idle_exit(models, tmp_path, monkeypatch):
    """The engine, frozen past its idle timeout, wakes with the magic's request at its door:
    it decides to exit (refusing or no longer taking the request), and the magic asks once
    more, on a fresh engine, instead of failing."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    env = {**os.environ, "CODESTRAL_MODEL": str(models["mlx"])}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    srv = None
    try:
        run_in_kernel(kc, "%load_ext jupyter_codestral")
        idle_s = 8  # time enough to connect the magic first, even on a busy machine
        srv = start_server(
            models["mlx"], tmp_path, "--idle-timeout", str(idle_s), log=tmp_path / "idle.log"
        )
        ready = time.monotonic()
        reply, _ = run_in_kernel(kc, "%codestral status")  # the magic talks to this engine
        assert reply["status"] == "ok", reply
        srv.proc.send_signal(signal.SIGSTOP)
        # A duration on purpose, not a wait for a condition: the idle timeout passes, frozen.
        time.sleep(max(0.0, ready + idle_s + 1 - time.monotonic()))
        msg_id = kc.execute("%%codestral --max-tokens 3 -o answer\nhello")

        def asking() -> bool:  # the magic shows it is waiting, then connects
            msg = kc.get_iopub_msg(timeout=60)
            return msg["parent_header"].get("msg_id") == msg_id and "display" in msg["msg_type"]

        wait_until(asking, what="the magic to send its request")
        srv.proc.send_signal(signal.SIGCONT)
        assert srv.proc.wait(timeout=60) == 0
        reply = wait_until(lambda: _reply_to(kc, msg_id), what="the cell's reply")
        assert reply["status"] == "ok", reply
        fresh = connection.read_live()
        assert fresh is not None and fresh.pid != srv.pid
        assert "Idle for" in (tmp_path / "idle.log").read_text()
        stopped, _ = run_in_kernel(kc, "%codestral stop")
        assert stopped["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        if srv is not None:
            srv.proc.kill()


def _reply_to(kc, msg_id: str) -> dict | None:
    msg = kc.get_shell_msg(timeout=60)
    return msg["content"] if msg["parent_header"].get("msg_id") == msg_id else None


# The lab's route, on a real Jupyter server whose runtime directory the tests choose.


@pytest.fixture
def jp_runtime_dir(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    return runtime


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_codestral": True}}}


SOURCE = "def area(r):\n    return "
LAB_BODY = {"cells": [{"cell_type": "code", "source": SOURCE}], "cell": 0,
            "cursor": len(SOURCE), "max_tokens": 3}  # fmt: skip


async def test_the_lab_retries_once_on_a_fresh_engine_after_an_idle_exit(
    jp_fetch, jp_serverapp, jp_runtime_dir, models, monkeypatch
):
    """As the magic's test: the lab's completion reaches an engine that wakes past its idle
    timeout; the route starts a fresh engine and asks it (which answers, or says it is still
    loading, as on first use), instead of reporting the exit as a failure."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(jp_runtime_dir))
    jp_serverapp.web_app.settings["codestral"].settings.model = str(models["mlx"])
    idle_s = 3
    srv = await asyncio.to_thread(
        start_server,
        models["mlx"],
        jp_runtime_dir,
        "--idle-timeout",
        str(idle_s),
        log=jp_runtime_dir / "idle.log",
    )
    ready = time.monotonic()
    srv.proc.send_signal(signal.SIGSTOP)
    port = int(srv.url.rsplit(":", 1)[1])
    try:
        # A duration on purpose, not a wait for a condition: the idle timeout passes, frozen.
        await asyncio.sleep(ready + idle_s + 1 - time.monotonic())
        asking = asyncio.ensure_future(
            jp_fetch("codestral", "complete", method="POST", body=json.dumps(LAB_BODY))
        )

        def reached() -> bool:  # the route has reached the frozen engine
            if _connected_to(port):
                return True
            assert not asking.done(), asking.result()
            return False

        await wait_until_async(reached, what="the route to reach the frozen engine")
        srv.proc.send_signal(signal.SIGCONT)
        lines = [json.loads(line) for line in (await asking).body.decode().splitlines()]
        last = lines[-1]
        assert last["type"] == "done" or last["error"]["kind"] == "engine_starting", lines
        assert await asyncio.to_thread(srv.proc.wait, 60) == 0
        fresh = connection.read_live()
        assert fresh is not None and fresh.pid != srv.pid
        assert "Idle for" in (jp_runtime_dir / "idle.log").read_text()
    finally:
        srv.proc.kill()
        await asyncio.to_thread(stop_local_server)


def _connected_to(port: int) -> bool:
    return any(
        c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        for c in psutil.net_connections("tcp")
    )


def test_the_log_of_an_engine_jupyter_starts_is_rotated(models, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    log = tmp_path / "codestral-engine.log"
    log.write_text("old line\n" * ((11 << 20) // 9))  # over the 10 MB a log may grow to
    with EngineClient.local(str(models["mlx"]), progress=False) as client:
        assert client.status().state == "ready"
    wait_until(lambda: "Serving" in log.read_text(), what="the engine's first lines")
    assert log.stat().st_size < 1 << 20 and "old line" not in log.read_text()
    assert (tmp_path / "codestral-engine.log.1").read_text().startswith("old line")
    assert log.stat().st_mode & 0o777 == 0o600
    stop_local_server()


async def test_the_lab_status_says_a_frozen_engine_is_not_responding(
    jp_fetch, jp_runtime_dir, models, monkeypatch
):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(jp_runtime_dir))
    srv = await asyncio.to_thread(
        start_server, models["mlx"], jp_runtime_dir, log=jp_runtime_dir / "engine.log"
    )
    srv.proc.send_signal(signal.SIGSTOP)
    try:
        status = json.loads((await jp_fetch("codestral", "status")).body)
        assert status["state"] == "not_responding", status
        assert f"pid {srv.pid}" in status["error"]
    finally:
        srv.proc.send_signal(signal.SIGCONT)
        srv.proc.terminate()
        await asyncio.to_thread(srv.proc.wait, 60)


def test_a_local_token_refusal_gets_local_advice(models, tmp_path, monkeypatch):
    """The engine refuses the token its connection file names (something overwrote the file):
    the magic says what helps here, not the remote server's API-key advice."""
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from jupyter_codestral.magic.magics import Codestral

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    srv = start_server(models["mlx"], tmp_path, log=tmp_path / "engine.log")
    magics = Codestral(InteractiveShell.instance())
    magics.engine, magics.model = "shared", str(models["mlx"])
    srv.proc.send_signal(signal.SIGSTOP)  # so it cannot write its file back in between
    try:
        info = json.loads(srv.conn.read_text())
        srv.conn.write_text(json.dumps(info | {"token": "overwritten"}))
        outcome: dict = {}

        def connect() -> None:
            try:
                magics.link.connect()
            except UsageError as exc:
                outcome["error"] = str(exc)

        connecting = threading.Thread(target=connect)
        connecting.start()
        wait_until(lambda: _connected_to(int(srv.url.rsplit(":", 1)[1])), what="the request")
        srv.proc.send_signal(signal.SIGCONT)
        connecting.join(timeout=60)
        assert f"pid {srv.pid}" in outcome["error"] and "connection file" in outcome["error"]
        assert "%codestral stop" in outcome["error"] and "api_key" not in outcome["error"]
    finally:
        srv.proc.send_signal(signal.SIGCONT)
        srv.proc.terminate()
        srv.proc.wait(timeout=60)
