"""The real server process on the tiny model, driven by the unmodified mistralai and openai SDKs."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from mistralai.client import Mistral
from openai import OpenAI

from codestral_engine import EngineStatus
from codestral_engine.backends import resolve_backend
from codestral_engine.serving.server import ServerState, create_app
from codestral_engine.weights.checkpoint import inspect
from jupyter_codestral.errors import CodestralError

from .helpers import TOKEN, engine_http, start_server, wait_until

PREFIX, SUFFIX = "def mean(xs):\n    return", "\n\nprint(mean([1, 2, 3]))\n"
MESSAGES = [{"role": "user", "content": "Write a function that reverses a string."}]


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = start_server(models["mlx"], tmp_path_factory.mktemp("runtime"), "--token", TOKEN)
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0
    assert not srv.conn.exists()  # removed on a clean exit


@pytest.fixture
def http(server):
    with engine_http(server.url) as c:
        yield c


@pytest.fixture
def mistral(server):
    return Mistral(api_key=TOKEN, server_url=server.url)


def test_connection_file_is_private_and_complete(server, models):
    assert server.conn.stat().st_mode & 0o777 == 0o600
    assert server.token == TOKEN and server.pid == server.proc.pid
    assert server.url.startswith("http://127.0.0.1:")
    assert server.model == str(models["mlx"])


def test_mistral_sdk_fim_complete_equals_engine_greedy(mistral, engine):
    expected = engine.fim(PREFIX, SUFFIX, max_tokens=12).result()
    response = mistral.fim.complete(
        model="codestral-latest", prompt=PREFIX, suffix=SUFFIX, max_tokens=12
    )
    assert response.choices[0].message.content == expected.text
    assert response.choices[0].finish_reason == "length"
    assert response.usage.prompt_tokens == expected.usage.prompt_tokens
    assert response.usage.completion_tokens == 12


def test_mistral_sdk_fim_stream_equals_engine_greedy(mistral, engine):
    expected = engine.fim(PREFIX, SUFFIX, max_tokens=12, stop=["\n\n"]).result()
    chunks = list(
        mistral.fim.stream(
            model="codestral-latest", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, stop=["\n\n"]
        )
    )
    text = "".join(c.data.choices[0].delta.content or "" for c in chunks)
    assert text == expected.text
    assert chunks[-1].data.choices[0].finish_reason == expected.finish_reason
    assert chunks[-1].data.usage.completion_tokens == expected.usage.completion_tokens


def test_mistral_sdk_chat_complete_and_stream(mistral, engine):
    expected = engine.chat(MESSAGES, max_tokens=10).result()
    whole = mistral.chat.complete(model="codestral-latest", messages=MESSAGES, max_tokens=10)
    assert whole.choices[0].message.content == expected.text
    assert whole.usage.prompt_tokens == expected.usage.prompt_tokens
    streamed = list(mistral.chat.stream(model="codestral-latest", messages=MESSAGES, max_tokens=10))
    assert "".join(c.data.choices[0].delta.content or "" for c in streamed) == expected.text
    assert streamed[-1].data.usage.total_tokens == expected.usage.prompt_tokens + 10


def test_openai_sdk_chat(server, engine):
    client = OpenAI(api_key=TOKEN, base_url=server.url + "/v1")
    expected = engine.chat(MESSAGES, max_tokens=8).result()
    whole = client.chat.completions.create(
        model="codestral-latest", messages=MESSAGES, max_tokens=8
    )
    assert whole.choices[0].message.content == expected.text
    assert whole.usage.completion_tokens == 8
    stream = client.chat.completions.create(
        model="codestral-latest", messages=MESSAGES, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected.text


def test_second_fim_request_reports_cached_prompt_tokens(http):
    body = {
        "model": "codestral-latest",
        "prompt": "import math\n" * 20 + "x = math.",
        "max_tokens": 3,
    }
    first = http.post("/v1/fim/completions", json=body).json()["usage"]
    body["prompt"] += "sq"
    second = http.post("/v1/fim/completions", json=body).json()["usage"]
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["prompt_tokens"] - 2
    assert second["prompt_tokens"] - cached <= 3


def test_every_route_but_health_needs_the_token(server, models):
    # Enumerated from the app itself: a new route without auth fails here.
    app = create_app(ServerState(model_path=models["mlx"], token=TOKEN))
    routes = [(r.path, sorted(r.methods - {"HEAD"})[0]) for r in app.routes]
    assert len(routes) >= 5
    for path, method in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = httpx.request(method, server.url + path, headers=headers, json={})
            if path == "/health":
                assert response.status_code == 200
            else:
                assert response.status_code == 401, (path, headers)
                assert response.json()["type"] == "authentication_error"


DEEP = b'{"model": "codestral-latest", "prompt": "x", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}"
LONG_NUMBER = b'{"model": "codestral-latest", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}"


def fim_json(**fields) -> bytes:
    return json.dumps({"model": "codestral-latest", "prompt": "x", **fields}).encode()


@pytest.mark.parametrize(
    "content,status,fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "codestral-latest", "prompt": "\xff\xfe"}', 400, "UTF-8"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"model": "codestral-latest"}).encode(), 422, "'prompt'"),
        (
            json.dumps({"model": "codestral-latest", "prompt": "x", "max_tokens": "5"}).encode(),
            422,
            "max_tokens",
        ),
        (
            json.dumps({"model": "codestral-latest", "prompt": "x", "max_tokens": -2}).encode(),
            422,
            "max_tokens",
        ),
        (json.dumps({"model": "codestral-latest", "prompt": 7}).encode(), 422, "prompt"),
        # Each of these was a 500 (found by fuzzing): now a 4xx that says what is wrong.
        (rb'{"model": "codestral-latest", "prompt": "x = \ud83d"}', 400, "lone UTF-16"),
        (rb'{"model": "codestral-latest", "prompt": "x", "suffix": "\udc00"}', 400, "surrogate"),
        (rb'{"model": "codestral-\ud800", "prompt": "x"}', 400, "surrogate"),
        (DEEP, 400, "nested too deeply"),
        (LONG_NUMBER, 400, "not valid JSON"),
        (fim_json(random_seed=2**64, temperature=0.5), 422, "random_seed must be below"),
        (fim_json(max_tokens=2**63), 422, "context window of 32768 tokens"),
        (fim_json(max_tokens=5, max_completion_tokens=6), 422, "max_completion_tokens differ"),
        (json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, "Unknown model 'gpt-4'"),
        (
            json.dumps({"model": "codestral-latest", "prompt": "x " * 1_500_000}).encode(),
            413,
            "context window",
        ),
        (b'{"model": "codestral-latest", "prompt": "' + b"y" * (9 << 20) + b'"}', 413, "MB"),
    ],
)
def test_bad_input_gets_a_json_4xx_and_the_server_keeps_serving(http, content, status, fragment):
    response = http.post(
        "/v1/fim/completions", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    body = response.json()
    assert body["object"] == "error" and fragment in body["message"], body
    if status == 422:  # Mistral's HTTPValidationError shape
        assert body["detail"][0]["loc"][0] == "body" and body["detail"][0]["msg"]
    ok = http.post(
        "/v1/fim/completions", json={"model": "codestral-latest", "prompt": "a", "max_tokens": 2}
    )
    assert ok.status_code == 200


def test_unknown_route_and_method_are_json(http):
    assert http.get("/v1/nothing").json()["code"] == "404"
    assert http.get("/v1/fim/completions").status_code == 405
    assert http.get("/v1/fim/completions").json()["object"] == "error"


def test_models_and_status(http, models):
    http.post(
        "/v1/fim/completions", json={"model": "codestral-latest", "prompt": "a", "max_tokens": 2}
    )
    card = http.get("/v1/models").json()["data"][0]
    assert card["id"] == models["mlx"].name
    assert "codestral-latest" in card["aliases"]
    assert card["max_context_length"] == 32768
    status = http.get("/v1/status").json()
    assert status["state"] == "ready" and status["layout"] == "mlx"
    assert status["backend"] == resolve_backend("auto", inspect(models["mlx"]))
    assert status["memory_bytes"] > 0 and status["queue_length"] == 0
    assert status["last_request"]["time_to_first_token_s"] > 0
    # The one status model: every field the route sends is declared, with its type.
    assert EngineStatus.model_validate(status).model_dump() == status


def test_an_abandoned_non_streaming_request_is_cancelled(http, server):
    """Without max_tokens it would run to the context window (minutes on a real model)."""

    def cancelled() -> int:
        return http.get("/v1/status").json()["finished_requests"].get("cancelled", 0)

    before = cancelled()
    body = {"model": "codestral-latest", "prompt": "while True:\n", "min_tokens": 30000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + "/v1/fim/completions",
            json=body,
            timeout=1.0,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    wait_until(lambda: cancelled() > before, timeout=10, what="the abandoned request's end")
    last = http.get("/v1/status").json()["last_request"]
    assert last["finish_reason"] == "cancelled" and last["completion_tokens"] < 30000
    quick = http.post("/v1/fim/completions", json=json.loads(fim_json(max_tokens=2)))
    assert quick.status_code == 200


def test_disconnect_mid_stream_cancels_the_generation(http):
    body = {
        "model": "codestral-latest",
        "prompt": "while True:\n",
        "max_tokens": 20000,
        "stream": True,
    }
    with http.stream("POST", "/v1/fim/completions", json=body) as response:
        chunks = (line for line in response.iter_lines() if line.startswith("data: {"))
        for _ in range(5):
            next(chunks)

    # Leaving the block closed the connection: the server must stop, not generate 20000 tokens.
    def last_cancelled() -> dict | None:
        last = http.get("/v1/status").json()["last_request"] or {}
        return last if last.get("finish_reason") == "cancelled" else None

    last = wait_until(last_cancelled, what="the abandoned request to be cancelled")
    assert last["completion_tokens"] < 20000
    follow = http.post(
        "/v1/fim/completions", json={"model": "codestral-latest", "prompt": "b", "max_tokens": 2}
    )
    assert follow.json()["usage"]["completion_tokens"] == 2


def test_session_key_supersedes_the_previous_request(http):
    base = {
        "model": "codestral-latest",
        "max_tokens": 20000,
        "stream": True,
        "session_key": "editor-1",
    }
    results = {}
    streaming = threading.Event()

    def first():
        with http.stream(
            "POST", "/v1/fim/completions", json={**base, "prompt": "x = 1"}
        ) as response:
            chunks = []
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[5:]))
                    streaming.set()
        results["first"] = chunks[-1]["choices"][0]["finish_reason"]

    thread = threading.Thread(target=first)
    thread.start()
    assert streaming.wait(timeout=60)  # the first request is generating
    second = http.post(
        "/v1/fim/completions", json={**base, "prompt": "x = 12", "stream": False, "max_tokens": 3}
    )
    thread.join(timeout=60)
    assert results["first"] == "cancelled"
    assert second.json()["choices"][0]["finish_reason"] == "length"


def test_twenty_clients_with_random_disconnects(server, http):
    rng = random.Random(7)
    plan = [(rng.random() < 0.4, rng.randint(2, 40)) for _ in range(200)]
    outcomes: list[str] = []
    memory = []

    def client(jobs):
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
        ) as c:
            for disconnect, n in jobs:
                body = {
                    "model": "codestral-latest",
                    "prompt": f"v = {n}\n",
                    "max_tokens": n,
                    "stream": True,
                }
                with c.stream("POST", "/v1/fim/completions", json=body) as response:
                    assert response.status_code in (200, 429)
                    if response.status_code == 429:
                        outcomes.append("busy")
                        continue
                    finish = None
                    for i, line in enumerate(response.iter_lines()):
                        if disconnect and i > 3:
                            break
                        if line.startswith("data: {"):
                            finish = json.loads(line[6:])["choices"][0]["finish_reason"] or finish
                    outcomes.append("disconnected" if disconnect and finish is None else finish)
                if len(outcomes) in (50, 200):
                    memory.append(c.get("/v1/status").json()["memory_bytes"])

    threads = [threading.Thread(target=client, args=(plan[i::20],)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(outcomes) == 200
    assert set(outcomes) <= {"length", "stop", "disconnected", "busy"}
    assert http.get("/health").json()["status"] == "ready"
    status = http.get("/v1/status").json()
    assert status["queue_length"] == 0
    after = status["memory_bytes"]
    assert after - min(memory) < 100 << 20, (memory, after)  # no growth per request


def test_second_serve_finds_the_running_one(server, models):
    again = subprocess.run(
        [sys.executable, "-m", "codestral_engine", "serve", "--model", str(models["mlx"])],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0
    assert f"already running at {server.url}" in again.stderr
    assert json.loads(server.conn.read_text())["pid"] == server.pid


def test_killed_server_leaves_no_trusted_connection_file(models, tmp_path, monkeypatch):
    from codestral_engine import connection

    srv = start_server(models["mlx"], tmp_path)
    srv.proc.kill()
    srv.proc.wait()
    assert srv.conn.exists()  # SIGKILL gives no chance to clean up...
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert connection.read_live() is None  # ...but a dead pid is not trusted,
    assert not srv.conn.exists()  # and the stale file is removed
    replacement = start_server(models["mlx"], tmp_path)  # a new serve takes over
    assert replacement.pid != srv.pid
    replacement.proc.terminate()
    replacement.proc.wait(timeout=30)


def test_a_zombie_server_pid_is_not_trusted(tmp_path, monkeypatch):
    from codestral_engine import connection

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # exits at once; not reaped yet
    wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, what="a zombie")
    connection.write(connection.ConnectionInfo("http://127.0.0.1:1", "t", child.pid, "m"))
    assert connection.read_live() is None  # dead though its pid still exists
    assert not (tmp_path / "codestral-engine.json").exists()
    child.wait()


def test_image_parts_and_tiny_temperatures_are_not_500s(http):
    part = {"type": "image_url", "image_url": "http://example.invalid/plot.png"}
    image = {"model": "codestral-latest", "messages": [{"role": "user", "content": [part]}]}
    refused = http.post("/v1/chat/completions", json=image)
    assert refused.status_code == 422 and "image" in refused.json()["message"], refused.text
    greedy = http.post("/v1/fim/completions", json=json.loads(fim_json(max_tokens=3)))
    tiny = http.post(
        "/v1/fim/completions", json=json.loads(fim_json(max_tokens=3, temperature=1e-320))
    )
    assert tiny.status_code == 200, tiny.text  # samples as its limit: greedy
    assert tiny.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


def test_protocol_details_real_clients_rely_on(http, server, mistral, models):
    card = http.get("/v1/models/codestral-latest")
    assert card.status_code == 200 and card.json()["id"] == models["mlx"].name
    assert mistral.models.retrieve(model_id="codestral-latest").id == models["mlx"].name
    assert http.get("/v1/models/gpt-4").status_code == 404
    wrong_method = http.get("/v1/fim/completions")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    lower = httpx.get(server.url + "/v1/status", headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200
    # mistralai raises its typed validation error for a 422, with Mistral's detail shape.
    from mistralai.client.errors import HTTPValidationError

    with pytest.raises(HTTPValidationError) as invalid:
        mistral.fim.complete(model="codestral-latest", prompt="x", temperature=9)
    assert "temperature" in invalid.value.data.detail[0].msg


def test_an_oversized_body_is_refused_before_it_is_read(server):
    """A 64 MB Content-Length gets its 413 at once, without the server waiting for the body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n{"
        )
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head


def test_a_reused_pid_is_not_trusted(tmp_path, monkeypatch):
    """The pid of a killed server, reused by an unrelated process (here: this one)."""
    from codestral_engine import connection

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    started = connection.process_started(os.getpid())
    connection.write(
        connection.ConnectionInfo(
            "http://127.0.0.1:1", "t", os.getpid(), "m", started=started - 1000
        )
    )
    assert connection.read_live() is None
    assert not (tmp_path / "codestral-engine.json").exists()
    mine = connection.ConnectionInfo("http://127.0.0.1:1", "t", os.getpid(), "m", started)
    connection.write(mine)
    assert connection.read_live() == mine


def broken_model(models, tmp_path) -> Path:
    """A model that fails only after the server listens: its vocabulary does not match the
    tokenizer's."""
    broken = tmp_path / "broken"
    shutil.copytree(models["mlx"], broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"vocab_size": 1000}))
    return broken


def test_a_server_whose_model_fails_to_load_exits(models, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "CODESTRAL_ENGINE_FAILED_EXIT_S": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "codestral_engine",
            "serve",
            "--model",
            str(broken_model(models, tmp_path)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "failed to load" in proc.stderr, proc.stderr
    assert not (runtime / "codestral-engine.json").exists()  # the slot is free again


def test_the_client_replaces_a_failed_engine_and_names_another_model(models, tmp_path, monkeypatch):
    from jupyter_codestral.client.engine_client import EngineClient, stop_local_server

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    failed = start_server(broken_model(models, tmp_path), tmp_path, log=tmp_path / "failed.log")
    wait_until(lambda: httpx.get(failed.url + "/health").json()["status"] == "error")
    with EngineClient.local(str(models["mlx"]), progress=False) as client:  # replaced
        assert client.status().state == "ready"
        assert failed.proc.wait(timeout=30) is not None
    with pytest.raises(CodestralError) as other:
        EngineClient.local(str(models["hf"]), progress=False)
    assert other.value.kind == "other_model" and "%codestral stop" in other.value.fix
    assert str(models["mlx"]) in str(other.value)
    stop_local_server()


def test_operator_details(models, tmp_path):
    """The token from the environment or a file (not the process list); a read-only or broken
    runtime directory is a clear error with nothing left behind."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    srv = start_server(
        models["mlx"],
        runtime,
        log=tmp_path / "a.log",
        extra_env={"CODESTRAL_ENGINE_TOKEN": "from-env"},
    )
    assert srv.token == "from-env"
    assert "from-env" not in " ".join(psutil.Process(srv.proc.pid).cmdline())
    srv.proc.terminate()
    srv.proc.wait(timeout=30)
    (tmp_path / "token").write_text("from-file\n")
    srv = start_server(
        models["mlx"], runtime, "--token-file", str(tmp_path / "token"), log=tmp_path / "b.log"
    )
    assert srv.token == "from-file"
    srv.proc.terminate()
    srv.proc.wait(timeout=30)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "codestral_engine", "serve", "--model", str(models["mlx"])],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(blocked / "runtime")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "JUPYTER_RUNTIME_DIR" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_idle_engine_exits_and_the_client_starts_it_again(models, tmp_path, monkeypatch):
    """Requests and open streams keep it; status polls do not; the next request starts it."""
    from jupyter_codestral.client.engine_client import EngineClient, stop_local_server

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    srv = start_server(models["mlx"], tmp_path, "--idle-timeout", "2", log=tmp_path / "idle.log")
    auth = {"Authorization": f"Bearer {srv.token}"}
    body = {"model": "codestral-latest", "prompt": "while True:\n", "stream": True,
            "min_tokens": 30000, "max_tokens": 30000}  # fmt: skip
    with httpx.stream(
        "POST", srv.url + "/v1/fim/completions", json=body, headers=auth, timeout=30
    ) as stream:
        lines = stream.iter_lines()
        started = time.monotonic()
        while time.monotonic() - started < 4:  # an open stream, twice the timeout
            next(lines)
        assert srv.proc.poll() is None  # checked while the stream is still open

    def gone() -> bool:
        try:
            httpx.get(srv.url + "/v1/status", headers=auth)
        except httpx.TransportError:
            return True
        return False

    # A status bar polling every 0.25 s does not keep it loaded.
    wait_until(gone, timeout=30, interval=0.25, what="the idle engine to exit")
    srv.proc.wait(timeout=20)
    assert "Idle for" in (tmp_path / "idle.log").read_text()
    assert not srv.conn.exists()
    with EngineClient.local(str(models["mlx"]), progress=False, idle_timeout=0) as client:
        assert client.status().state == "ready"  # started again
    stop_local_server()
