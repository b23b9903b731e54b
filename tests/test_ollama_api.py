"""Ollama's API on the real server (tiny model), driven by the official `ollama` client."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timezone

import httpx
import ollama
import pytest
from mistral_common.protocol.fim.request import FIMRequest

from codestral_engine.serving.app import create_app
from codestral_engine.serving.ollama_api import PATHS
from codestral_engine.serving.server import ServerState

from .helpers import TOKEN, engine_http, start_server, wait_until

PREFIX, SUFFIX = "def mean(xs):\n    return", "\n\nprint(mean([1, 2, 3]))\n"
MESSAGES = [{"role": "user", "content": "Write a function that reverses a string."}]


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("runtime")
    srv = start_server(
        models["mlx"], runtime, "--token", TOKEN, "--log-prompts", log=runtime / "serve.log"
    )
    srv.log = runtime / "serve.log"
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0


@pytest.fixture
def client(server):
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def http(server):
    with engine_http(server.url) as c:
        yield c


def mistral_fim(http, **fields) -> dict:
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, **fields}
    return http.post("/v1/fim/completions", json=body).json()


def test_generate_with_a_suffix_is_token_exact_fim(client, http, reference_tokenizer):
    expected = reference_tokenizer.encode_fim(FIMRequest(prompt=PREFIX, suffix=SUFFIX)).tokens
    whole = client.generate(
        model="codestral",
        prompt=PREFIX,
        suffix=SUFFIX,
        stream=False,
        options={"num_predict": 12, "temperature": 0},
    )
    assert list(whole.context[: whole.prompt_eval_count]) == expected
    assert whole.prompt_eval_count == len(expected)
    mistral = mistral_fim(http, max_tokens=12)
    assert whole.response == mistral["choices"][0]["message"]["content"]
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 12
    assert whole.total_duration >= whole.prompt_eval_duration > 0
    assert whole.eval_duration > 0 and whole.load_duration == 0


def test_generate_streams_ndjson(client, http):
    parts = list(
        client.generate(
            model="codestral:22b",
            prompt=PREFIX,
            suffix=SUFFIX,
            stream=True,
            options={"num_predict": 10, "stop": ["\n\n"]},
        )
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    text = "".join(p.response for p in parts)
    mistral = mistral_fim(http, max_tokens=10, stop=["\n\n"])
    assert text == mistral["choices"][0]["message"]["content"]
    assert parts[-1].done_reason == mistral["choices"][0]["finish_reason"]
    assert parts[-1].eval_count == mistral["usage"]["completion_tokens"]
    assert parts[-1].prompt_eval_count == mistral["usage"]["prompt_tokens"]


def test_the_engine_logs_the_fim_prompt_it_was_given(client, server):
    client.generate(
        model="codestral", prompt="x = ", suffix="\nprint(x)", options={"num_predict": 1}
    )
    logged = [
        json.loads(line.split("codestral-engine: ", 1)[1])
        for line in server.log.read_text().splitlines()
        if '"fim_prompt"' in line
    ]
    assert {"event": "fim_prompt", "prompt": "x = ", "suffix": "\nprint(x)"} in logged


def test_raw_prompt_with_control_tokens_equals_fim(client, http):
    raw = client.generate(
        model="codestral",
        prompt=f"[SUFFIX]{SUFFIX}[PREFIX]{PREFIX}",
        raw=True,
        stream=False,
        options={"num_predict": 8},
    )
    fim = client.generate(
        model="codestral", prompt=PREFIX, suffix=SUFFIX, stream=False, options={"num_predict": 8}
    )
    assert raw.context == fim.context and raw.response == fim.response


def test_generate_without_a_suffix_is_an_instruct_turn(client, http):
    whole = client.generate(
        model="codestral", prompt=MESSAGES[0]["content"], stream=False, options={"num_predict": 6}
    )
    body = {"model": "codestral-latest", "messages": MESSAGES, "max_tokens": 6}
    chat = http.post("/v1/chat/completions", json=body).json()
    assert whole.response == chat["choices"][0]["message"]["content"]
    assert whole.prompt_eval_count == chat["usage"]["prompt_tokens"]


def test_chat_whole_and_streamed(client, http):
    body = {"model": "codestral-latest", "messages": MESSAGES, "max_tokens": 8}
    expected = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    whole = client.chat(model="codestral", messages=MESSAGES, options={"num_predict": 8})
    assert whole.message.role == "assistant" and whole.message.content == expected["content"]
    assert whole.eval_count == 8 and whole.done_reason == "length"
    streamed = list(
        client.chat(
            model="codestral:latest", messages=MESSAGES, stream=True, options={"num_predict": 8}
        )
    )
    assert "".join(p.message.content for p in streamed) == expected["content"]
    assert streamed[-1].done and streamed[-1].prompt_eval_count == whole.prompt_eval_count


def test_list_show_ps_version(client, models, server):
    names = [m.model for m in client.list().models]
    assert {"codestral:latest", "codestral:22b", f"{models['mlx'].name}:latest"} <= set(names)
    shown = client.show("codestral")
    assert "insert" in shown.capabilities and "completion" in shown.capabilities
    assert shown.modelinfo["llama.context_length"] == 32768
    assert shown.details.family == "llama"
    running = client.ps().models
    assert running and running[0].model == "codestral:latest" and running[0].expires_at
    assert httpx.get(
        server.url + "/api/version", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()["version"]


def test_load_and_unload_requests_leave_the_shared_model_loaded(client, http):
    loaded = client.generate(model="codestral", prompt="", keep_alive="10m")
    assert loaded.done and loaded.done_reason == "load"
    unloaded = client.generate(model="codestral", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert http.get("/health").json()["status"] == "ready"
    assert client.generate(
        model="codestral", prompt="a", suffix="", options={"num_predict": 2}
    ).done


def test_without_the_token_every_ollama_route_refuses_in_ollamas_shape(server, models):
    app = create_app(ServerState(model_path=models["mlx"], token=TOKEN))
    routes = {r.path: sorted(r.methods - {"HEAD"})[0] for r in app.routes if r.path in PATHS}
    assert set(routes) == set(PATHS)
    for path, method in routes.items():
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = httpx.request(method, server.url + path, headers=headers, json={})
            assert response.status_code == 401, (path, headers)
            assert "--ollama-no-auth" in response.json()["error"]
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).generate(model="codestral", prompt="x", suffix="")
    assert refused.value.status_code == 401


def test_the_token_from_ollama_api_key_works(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", TOKEN)
    assert ollama.Client(host=server.url).list().models


def test_no_auth_mode_is_loopback_only(models, tmp_path):
    srv = start_server(
        models["mlx"], tmp_path, "--ollama-no-auth", "--idle-timeout", "600", log=tmp_path / "a.log"
    )
    try:
        tokenless = ollama.Client(host=srv.url)
        assert (
            tokenless.generate(
                model="codestral", prompt="a", suffix="", options={"num_predict": 2}
            ).eval_count
            == 2
        )
        assert tokenless.list().models
        # keep_alive cannot shorten the shared engine's life: /api/ps shows its idle timeout.
        tokenless.generate(model="codestral", prompt="", keep_alive=0)
        expires = tokenless.ps().models[0].expires_at
        left = (expires - datetime.now(timezone.utc)).total_seconds()
        assert 590 < left <= 600, expires
        # Only the Ollama routes open up; a web page elsewhere, or a rebound DNS name, cannot.
        assert httpx.get(srv.url + "/v1/status").status_code == 401
        assert httpx.post(srv.url + "/infill", json={}).status_code == 401
        page = httpx.get(srv.url + "/api/tags", headers={"Origin": "https://evil.example"})
        assert page.status_code == 401 and "Origin" in page.json()["error"]
        rebound = httpx.get(srv.url + "/api/tags", headers={"Host": "evil.example"})
        assert rebound.status_code == 401
        local_page = httpx.get(srv.url + "/api/tags", headers={"Origin": "http://localhost:3000"})
        assert local_page.status_code == 200
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)
    refused = start_refused(models, tmp_path, "--ollama-no-auth", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "loopback only" in refused.stderr


def start_refused(models, tmp_path, *args):
    from .helpers import run_cli

    return run_cli(
        "serve",
        "--model",
        str(models["mlx"]),
        *args,
        env={"JUPYTER_RUNTIME_DIR": str(tmp_path / "other")},
        timeout=60,
    )


def test_disconnect_mid_stream_cancels_the_generation(http, server):
    body = {
        "model": "codestral",
        "prompt": "while True:\n",
        "suffix": "",
        "options": {"num_predict": 20000},
    }
    with http.stream("POST", "/api/generate", json=body) as response:
        lines = response.iter_lines()
        for _ in range(5):
            assert not json.loads(next(lines))["done"]

    def last_cancelled() -> dict | None:
        last = http.get("/v1/status").json()["last_request"] or {}
        return last if last.get("finish_reason") == "cancelled" else None

    assert wait_until(last_cancelled, what="cancellation")["completion_tokens"] < 20000


def ollama_json(**fields) -> bytes:
    return json.dumps({"model": "codestral", "prompt": "x", "suffix": "", **fields}).encode()


@pytest.mark.parametrize(
    "path,content,status,fragment",
    [
        ("/api/generate", b"{not json", 400, "not valid JSON"),
        ("/api/generate", b"[1]", 400, "JSON object"),
        ("/api/generate", rb'{"model": "codestral", "prompt": "\ud83d"}', 400, "surrogate"),
        ("/api/generate", json.dumps({"prompt": "x"}).encode(), 422, "model"),
        ("/api/generate", ollama_json(prompt=7), 422, "prompt"),
        ("/api/generate", ollama_json(options={"num_predict": "5"}), 422, "num_predict"),
        ("/api/generate", ollama_json(options={"num_predict": 0}), 422, "num_predict"),
        ("/api/generate", ollama_json(options={"temperature": 9}), 422, "temperature"),
        ("/api/generate", ollama_json(options={"seed": 2**64, "temperature": 0.5}), 422, "seed"),
        ("/api/generate", ollama_json(model="llama3"), 404, "'llama3' not found"),
        ("/api/generate", ollama_json(keep_alive="soon"), 400, "keep_alive"),
        ("/api/generate", ollama_json(images=["aGk="]), 400, "text only"),
        ("/api/generate", ollama_json(format="json"), 400, "format"),
        ("/api/generate", ollama_json(raw=True, prompt="x " * 1_500_000), 413, "context window"),
        ("/api/generate", ollama_json(prompt="y" * (9 << 20)), 413, "MB"),
        (
            "/api/chat",
            json.dumps({"model": "codestral", "messages": "hi"}).encode(),
            422,
            "messages",
        ),
        (
            "/api/chat",
            json.dumps(
                {
                    "model": "codestral",
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "function"}],
                }
            ).encode(),
            400,
            "tools",
        ),
        (
            "/api/chat",
            json.dumps(
                {"model": "codestral", "messages": [{"role": "tool", "content": "x"}]}
            ).encode(),
            422,
            "Invalid chat messages",
        ),
        ("/api/show", b"{}", 400, "model is required"),
        ("/api/show", json.dumps({"model": "gpt-4"}).encode(), 404, "not found"),
    ],
)
def test_bad_input_gets_an_ollama_4xx_and_the_server_keeps_serving(
    http, path, content, status, fragment
):
    response = http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"], response.json()
    ok = http.post("/api/generate", content=ollama_json(stream=False, options={"num_predict": 2}))
    assert ok.status_code == 200 and ok.json()["eval_count"] == 2


ODD_VALUES = [
    None,
    True,
    -1,
    0,
    2**70,
    1.5,
    float("nan"),
    "",
    "x",
    "\u2028",
    [],
    [1],
    {},
    {"a": 1},
    [{"role": "user"}],
    [{"text": 3}],
    "-5m",
    "9" * 400,
]
FIELDS = {
    "/api/generate": [
        "model",
        "prompt",
        "suffix",
        "system",
        "raw",
        "stream",
        "options",
        "keep_alive",
        "context",
        "template",
        "format",
        "images",
    ],
    "/api/chat": ["model", "messages", "stream", "options", "tools", "keep_alive", "format"],
    "/api/show": ["model", "name", "verbose"],
    "/infill": [
        "input_prefix",
        "input_suffix",
        "input_extra",
        "prompt",
        "n_predict",
        "n_indent",
        "t_max_predict_ms",
        "stop",
        "temperature",
        "seed",
        "stream",
        "response_fields",
    ],
}


def test_random_bodies_on_the_dialect_routes_never_500(http):
    """Fuzzing: every field of every dialect route given odd values, often several at once;
    each answer is a JSON 200 or 4xx, never a 500, and the server keeps serving."""
    import random

    rng = random.Random(26)
    seen = set()
    for _ in range(240):
        path = rng.choice(list(FIELDS))
        body = {
            "model": "codestral",
            "prompt": "a",
            "stream": False,
            "options": {"num_predict": 2},
            "n_predict": 2,
        }
        for field in rng.sample(FIELDS[path], rng.randint(1, 3)):
            value = rng.choice(ODD_VALUES)
            if field == "options" and rng.random() < 0.5:
                key = rng.choice(["num_predict", "temperature", "top_p", "seed", "stop"])
                value = {key: rng.choice(ODD_VALUES)}
            body[field] = value
        response = http.post(
            path,
            content=json.dumps(body, allow_nan=True),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code < 500, (path, body, response.text)
        seen.add(response.status_code)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["message"] if path == "/infill" else error
    assert {200, 400, 422} <= seen
    assert http.post("/infill", json={"input_prefix": "a", "n_predict": 2}).status_code == 200


# Notebook Intelligence 6.2.0 (PyPI notebook-intelligence), notebook_intelligence/llm_providers/
# ollama_llm_provider.py: its Codestral template and OllamaInlineCompletionModel's call, through
# the ollama client's module functions (a Client() from OLLAMA_HOST and OLLAMA_API_KEY); and its
# model enumeration (list, then show's model_info["<family>.context_length"]). Not installed:
# it pulls litellm, anthropic, claude-agent-sdk and mcp.
NBI_CODESTRAL = "[SUFFIX]{suffix}[PREFIX]{prefix}"
NBI_STOP = [
    "<|end▁of▁sentence|>",
    "<\uff5cend▁of▁sentence\uff5c>",  # fullwidth bars, as NBI writes them
    "<|EOT|>",
    "<EOT>",
    "\\n",
    "</s>",
    "<|eot_id|>",
]


def test_notebook_intelligences_ollama_provider(server, http, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    monkeypatch.setenv("OLLAMA_API_KEY", TOKEN)
    client = ollama.Client()  # what ollama.generate uses, from the environment
    prompt = NBI_CODESTRAL.format(prefix=PREFIX, suffix=SUFFIX.strip())
    reply = client.generate(
        model="codestral",
        prompt=prompt,
        raw=True,
        options={"num_predict": 128, "temperature": 0, "stop": NBI_STOP},
    )
    mistral = mistral_fim(http, suffix=SUFFIX.strip(), max_tokens=128, stop=NBI_STOP)
    assert reply.response == mistral["choices"][0]["message"]["content"]
    assert reply.prompt_eval_count == mistral["usage"]["prompt_tokens"]
    for model in client.list().models:
        info = client.show(model.model).modelinfo
        assert info[f"{model.details.family}.context_length"] == 32768


# jupyterlab-cellsense 0.3.1 (PyPI), cellsense/backend: the prompt CodestralCompletor.build_prompt
# gives (models/codestral.py; its f-string's line continuations keep the indentation) and
# OllamaProvider's bodies (providers/ollama.py: warmup, build_request), sent with its headers
# (providers/base.py: Bearer api_key), NDJSON read as it reads it. Not installed: it is a
# JupyterLab extension with its own inline completer, which would join the lab tests.
def cellsense_prompt(prefix: str, suffix: str, path: str) -> str:
    return f"            # File:{path}\n            [SUFFIX]{suffix}[PREFIX]{prefix}"


def test_cellsenses_ollama_provider(server, http, reference_tokenizer):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    warmup = {
        "model": "codestral",
        "prompt": "\n",
        "raw": True,
        "stream": False,
        "keep_alive": "30m",
        "options": {"num_predict": 1, "temperature": 0},
    }
    assert httpx.post(server.url + "/api/generate", json=warmup, headers=headers).status_code == 200
    request = {
        "model": "codestral",
        "prompt": cellsense_prompt(PREFIX, SUFFIX, "nb.ipynb"),
        "raw": True,
        "stream": True,
        "stop": ["# File:", "[PREFIX]", "[SUFFIX]", "</s>"],
        "keep_alive": "30m",
        "options": {"num_predict": 16, "temperature": 0},
    }
    chunks, last = [], None
    with httpx.stream(
        "POST", server.url + "/api/generate", json=request, headers=headers, timeout=60
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line:
                last = json.loads(line)
                chunks.append(last.get("response") or "")
    assert last["done"] and last["eval_count"] == 16
    tokens = reference_tokenizer.instruct_tokenizer.tokenizer
    fim = reference_tokenizer.encode_fim(FIMRequest(prompt=PREFIX, suffix=SUFFIX)).tokens
    header = tokens.encode("            # File:nb.ipynb\n            ", bos=False, eos=False)
    assert last["context"][: last["prompt_eval_count"]] == [1, *header, *fim[1:]]
    assert (
        "".join(chunks)
        == http.post("/api/generate", json={**request, "stream": False}).json()["response"]
    )


def test_a_wrong_method_is_an_ollama_405(http):
    response = http.get("/api/generate")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert "not allowed" in response.json()["error"]
