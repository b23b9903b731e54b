"""The Jupyter side's client: find or start the shared engine, stream, and report errors."""

from __future__ import annotations

import json

import httpx
import psutil
import pytest
from starlette.testclient import TestClient

import codestral_engine
from codestral_engine import codestral_tokenizer
from codestral_engine.serving.server import ServerState, create_app
from jupyter_codestral.client import protocol
from jupyter_codestral.client.engine_client import CodestralError, EngineClient
from jupyter_codestral.client.shapes import Sampling, sampling
from jupyter_codestral.client.status import read_status

from .helpers import TOKEN, start_server, wait_until


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def stop(pid: int) -> None:
    psutil.Process(pid).terminate()
    wait_until(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        timeout=30,
        what="the server to stop on SIGTERM",
    )


def test_local_starts_a_detached_server_with_progress_then_finds_it(
    runtime, models, capsys, engine
):
    with pytest.raises(CodestralError, match="No Codestral engine is running"):
        EngineClient.local(start=False)
    client = EngineClient.local(models["mlx"])
    try:
        assert "Loading Codestral" in capsys.readouterr().err  # the progress bar was drawn
        info = json.loads((runtime / "codestral-engine.json").read_text())
        assert client.url == info["url"]
        assert client.status().state == "ready"
        again = EngineClient.local(start=False)  # a second kernel finds the same server
        assert again.url == client.url
        expected = engine.fim("def f(x):", max_tokens=6).result().text
        whole = again.fim("def f(x):", max_tokens=6)
        assert whole["choices"][0]["message"]["content"] == expected
        pieces = list(again.fim("def f(x):", max_tokens=6, stream=True))
        assert "".join(p.text for p in pieces) == expected
        assert pieces[-1].usage.cached_prompt_tokens > 0
    finally:
        stop(json.loads((runtime / "codestral-engine.json").read_text())["pid"])
    assert not (runtime / "codestral-engine.json").exists()


def test_local_start_failure_is_reported(runtime, tmp_path):
    with pytest.raises(CodestralError, match=r"exited at start.*does not exist"):
        EngineClient.local(tmp_path / "no-such-model", progress=False)


def test_remote_url_with_api_key(models, tmp_path):
    srv = start_server(models["hf"], tmp_path, "--token", TOKEN)
    try:
        with EngineClient(srv.url, api_key=TOKEN) as client:
            reply = client.chat([{"role": "user", "content": "hi"}], max_tokens=3)
            assert reply["usage"]["completion_tokens"] == 3
            with pytest.raises(CodestralError, match="max_tokens") as bad:
                client.fim("x", max_tokens=0)
            assert bad.value.status == 422  # validation, as Mistral answers it
            with pytest.raises(CodestralError, match="serve a model named 'nope'") as missing:
                list(client.fim("x", model="nope", stream=True))
            assert missing.value.status == 404 and "codestral-latest" in str(missing.value)
            assert "remote_model" in missing.value.fix
            status = client.remote_status("codestral-latest")
            assert status.state == "ready" and "codestral-latest" in status.served_models
        with (
            EngineClient(srv.url, api_key="wrong") as client,
            pytest.raises(CodestralError) as denied,
        ):
            client.fim("x")
        assert denied.value.status == 401 and "API key" in str(denied.value)
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)


def test_unreachable_server_is_a_clear_error():
    with EngineClient("http://127.0.0.1:9", api_key="k") as client:
        with pytest.raises(CodestralError, match="Cannot reach Codestral at"):
            client.fim("x")
        with pytest.raises(CodestralError, match="Cannot reach"):
            list(client.fim("x", stream=True))


def test_loading_and_failed_models_answer_503(models):
    state = ServerState(model_path=models["mlx"], token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"model": "codestral-latest", "prompt": "x"}
    with TestClient(create_app(state)) as http:
        state.progress, state.stage = 0.4, "loading weights"
        loading = http.post("/v1/fim/completions", json=body, headers=auth)
        assert loading.status_code == 503
        assert int(loading.headers["Retry-After"]) > 0
        assert "40%" in loading.json()["message"]
        health = http.get("/health")  # 503 until ready, as llama.cpp's server answers
        assert health.status_code == 503 and health.json()["status"] == "loading"
        state.state, state.error = "error", "Weight file model.safetensors is truncated"
        failed = http.post("/v1/fim/completions", json=body, headers=auth)
        assert failed.status_code == 503 and "truncated" in failed.json()["message"]
        health = http.get("/health")  # the reason is for authenticated clients (status)
        assert health.status_code == 503 and health.json() == {"status": "error"}
        state.state = "ready"
        assert http.get("/health").status_code == 200


def test_full_queue_answers_429_with_retry_after(models):
    state = ServerState(model_path=models["mlx"], token=TOKEN)
    state.engine, state.state = codestral_engine.load(models["mlx"], max_queued=1), "ready"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        running = state.engine.fim("a = 1\n", max_tokens=5000)
        next(iter(running))
        waiting = state.engine.fim("b = 2\n", max_tokens=2)
        with TestClient(create_app(state)) as http:
            full = http.post(
                "/v1/fim/completions",
                json={"model": "codestral-latest", "prompt": "c"},
                headers=auth,
            )
        assert full.status_code == 429
        assert int(full.headers["Retry-After"]) >= 1
        running.cancel()
        assert waiting.result().usage.completion_tokens == 2
    finally:
        state.engine.close()


def run_steps(steps, answers: dict[str, httpx.Response]):
    """Drive one of protocol.py's request steps with prepared answers, by path."""
    try:
        request = next(steps)
        while True:
            request = steps.send(answers[request[1]])
    except StopIteration as done:
        return done.value


def test_vllm_check_refuses_a_server_without_codestrals_tokenizer():
    listing = httpx.Response(200, json={"data": [{"id": "codestral-latest", "owned_by": "vllm"}]})
    ours = codestral_tokenizer().encode(protocol.TOKENIZER_PROBE)
    wire = protocol.wire("vllm")
    good = {"/v1/models": listing, "/tokenize": httpx.Response(200, json={"tokens": ours})}
    assert run_steps(protocol.check_served(wire, "http://x", "codestral-latest"), good) == [
        "codestral-latest"
    ]
    other = {"/v1/models": listing, "/tokenize": httpx.Response(200, json={"tokens": [5, 6]})}
    with pytest.raises(CodestralError, match="does not use Codestral's tokenizer") as wrong:
        run_steps(protocol.check_served(wire, "http://x", "codestral-latest"), other)
    assert "--tokenizer-mode mistral" in wrong.value.fix
    # A server without /tokenize (not vLLM): nothing to compare, so it is taken as it is.
    bare = {"/v1/models": listing, "/tokenize": httpx.Response(404, json={"detail": "no"})}
    assert run_steps(protocol.check_served(wire, "http://x", "codestral-latest"), bare)


@pytest.mark.parametrize(
    "event",
    [
        {"object": "error", "message": "out of memory", "code": "500"},  # Mistral's shape
        {"error": {"message": "out of memory", "type": "InternalServerError", "code": 500}},
    ],
)
def test_an_error_sent_inside_the_stream_is_raised(event):
    with pytest.raises(CodestralError, match="failed mid-answer: out of memory") as failed:
        protocol.stream_chunk(json.dumps(event))
    assert failed.value.status == 500
    assert protocol.stream_chunk(json.dumps({"choices": [{"text": "x"}]})) is not None


def test_vllms_prompt_too_long_is_a_context_error():
    message = "The prompt (length 5000) is longer than the maximum model length of 4096."
    answer = httpx.Response(400, json={"error": {"message": message}})
    assert protocol.http_error(answer, "vllm").kind == "context"


def test_a_mistral_server_that_lists_no_models_is_not_an_error():
    """Mistral's protocol: a server may not list models to a key that completes fine."""
    wire = protocol.wire("mistral")
    for status in (401, 403, 404):
        answers = {"/v1/models": httpx.Response(status, json={"message": "no"})}
        steps = protocol.remote_status(wire, "https://example.invalid", "codestral-latest")
        assert run_steps(steps, answers)["state"] == "ready"
    answers = {"/v1/models": httpx.Response(401, json={"message": "no"})}  # vLLM: a real 401
    steps = protocol.remote_status(protocol.wire("vllm"), "http://gpu-box", "codestral-latest")
    assert run_steps(steps, answers)["kind"] == "auth"


def test_a_status_this_version_cannot_read_says_what_to_do():
    """Fields it does not know are ignored (an engine of another version); a field of another
    type is a CodestralError with the fix, never a crash of the status display."""
    assert read_status({"state": "ready", "newer_field": 1}, "http://h").state == "ready"
    with pytest.raises(CodestralError, match=r"cannot read \(pid\)") as bad:
        read_status({"state": "ready", "pid": "many"}, "http://h")
    assert bad.value.kind == "protocol" and "%codestral stop" in bad.value.fix


def test_request_parameters_are_typed_and_spelled_per_protocol():
    """Sampling from the magic's or the lab's options to the wire: Mistral's names for our
    engine and Mistral's API, OpenAI's for vLLM; unset ones not sent; an unknown name is a
    CodestralError naming it."""
    params = Sampling(max_tokens=8, temperature=0.0, stop="\n", random_seed=3)
    _, mistral = protocol.wire("mistral").fim("a", "b", "m", params)
    assert mistral == {
        "model": "m",
        "prompt": "a",
        "suffix": "b",
        "max_tokens": 8,
        "temperature": 0.0,
        "stop": "\n",
        "random_seed": 3,
    }
    _, openai = protocol.wire("vllm").chat([{"role": "user", "content": "a"}], "m", params)
    assert openai["seed"] == 3 and "random_seed" not in openai and "top_p" not in openai
    with pytest.raises(CodestralError, match=r"Unknown request parameter.*bogus"):
        sampling({"max_tokens": 1, "bogus": 2})
