"""llama.cpp's /infill on the real server (tiny model), with the request bodies llama.vim and
llama.vscode send, copied from their sources:

- llama.vim, autoload/llama.vim (ggml-org/llama.vim a1c8e6e): `s:ring_update` (the warm-up with
  the ring buffer's chunks, n_predict 0) and `llama#fim` (the completion, with response_fields).
- llama.vscode, src/llama-server.ts (ggml-org/llama.vscode 009e5b7): `createRequestPayload`
  (noPredict true: the warm-up of `updateExtraContext`; false: `getFIMCompletion`).
"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest

from codestral_engine.core.events import Finished, TextDelta, Usage
from codestral_engine.core.params import GenerationParams
from codestral_engine.core.request import Request
from codestral_engine.core.tokenizer import codestral_tokenizer
from codestral_engine.serving import infill_api
from codestral_engine.serving.infill_api import SNIPPET, InfillBody

from .helpers import TOKEN, engine_http, start_server

PREFIX = "import numpy as np\n\n\ndef normalize(v):\n"
MIDDLE = "    return v / np."
SUFFIX = "\n\nprint(normalize(np.ones(3)))\n"
RING = [  # what the ring buffer holds: chunks of other files, with llama.vim's extra fields
    {
        "text": "def dot(a, b):\n    return sum(x * y for x, y in zip(a, b))\n",
        "time": [1733, 0],
        "filename": "linalg.py",
    },
    {
        "text": "class Vector:\n    def __init__(self, xs):\n        self.xs = list(xs)\n",
        "time": [1734, 0],
        "filename": "vector.py",
    },
]


def vim_warmup(extra):
    return {
        "id_slot": 0,
        "input_prefix": "",
        "input_suffix": "",
        "input_extra": extra,
        "prompt": "",
        "n_predict": 0,
        "temperature": 0.0,
        "samplers": [],
        "stream": False,
        "cache_prompt": True,
        "t_max_prompt_ms": 1,
        "t_max_predict_ms": 1,
        "response_fields": [""],
    }


def vim_fim(prefix, middle, suffix, extra, n_predict=16, indent=0):
    return {
        "id_slot": 0,
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": extra,
        "prompt": middle,
        "n_predict": n_predict,
        "stop": [],
        "n_indent": indent,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": False,
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "response_fields": [
            "content",
            "timings/prompt_n",
            "timings/prompt_ms",
            "timings/prompt_per_token_ms",
            "timings/prompt_per_second",
            "timings/predicted_n",
            "timings/predicted_ms",
            "timings/predicted_per_token_ms",
            "timings/predicted_per_second",
            "truncated",
            "tokens_cached",
        ],
    }


def vscode_payload(no_predict, prefix, suffix, chunks, prompt, nindent=None):
    if no_predict:
        return {
            "input_prefix": prefix,
            "input_suffix": suffix,
            "input_extra": chunks,
            "prompt": prompt,
            "n_predict": 0,
            "samplers": [],
            "cache_prompt": True,
            "t_max_prompt_ms": 500,
            "t_max_predict_ms": 1,
        }
    body = {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": chunks,
        "prompt": prompt,
        "n_predict": 16,
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 2500,
    }
    return body | ({"n_indent": nindent} if nindent else {})


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = start_server(models["mlx"], tmp_path_factory.mktemp("runtime"), "--token", TOKEN)
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0


@pytest.fixture
def http(server):
    with engine_http(server.url) as c:
        yield c


def expected_ids(prefix: str, middle: str, suffix: str, extra: list[dict]) -> list[int]:
    tokenizer = codestral_tokenizer()
    fim = tokenizer.encode_fim(prefix + middle, suffix)
    chunks = "".join(SNIPPET + chunk["text"] for chunk in extra)
    return fim[:1] + (tokenizer.encode(chunks) if chunks else []) + fim[1:]


def test_without_extra_chunks_infill_is_the_mistral_routes_fim(http):
    reply = http.post("/infill", json=vim_fim(PREFIX, MIDDLE, SUFFIX, [], n_predict=10)).json()
    body = {
        "model": "codestral-latest",
        "prompt": PREFIX + MIDDLE,
        "suffix": SUFFIX,
        "max_tokens": 10,
    }
    mistral = http.post("/v1/fim/completions", json=body).json()
    assert reply["content"] == mistral["choices"][0]["message"]["content"]
    assert reply["timings/predicted_n"] == 10
    full = http.post(
        "/infill",
        json={**vim_fim(PREFIX, MIDDLE, SUFFIX, []), "n_predict": 3, "response_fields": None},
    ).json()
    assert full["tokens_evaluated"] == len(expected_ids(PREFIX, MIDDLE, SUFFIX, []))


def test_llama_vim_warmup_then_completion_reuses_the_ring_buffer(http):
    warm = http.post("/infill", json=vim_warmup(RING))
    assert warm.status_code == 200 and warm.json() == {}  # response_fields [""]: nothing
    last = http.get("/v1/status").json()["last_request"]
    chunks = len(codestral_tokenizer().encode("".join(SNIPPET + c["text"] for c in RING)))
    assert last["prompt_tokens"] == len(expected_ids("", "", "", RING))
    reply = http.post("/infill", json=vim_fim(PREFIX, MIDDLE, SUFFIX, RING)).json()
    assert set(reply) == set(vim_fim("", "", "", [])["response_fields"])
    assert reply["tokens_cached"] >= 1 + chunks + 1  # <s>, the chunks, [SUFFIX]
    total = len(expected_ids(PREFIX, MIDDLE, SUFFIX, RING))
    assert reply["timings/prompt_n"] == total - reply["tokens_cached"]
    assert reply["timings/predicted_n"] >= 1 and isinstance(reply["content"], str)
    assert reply["truncated"] is False


def test_llama_vscode_warmup_then_completion(http):
    chunks = [{"text": "def area(r):\n    return 3.14159 * r * r\n", "time": 1, "filename": "a.py"}]
    prefix, suffix = "import math\n\n\ndef volume(r, h):\n", "\n\nprint(volume(1, 2))\n"
    warm = http.post("/infill", json=vscode_payload(True, "", "", chunks, ""))
    assert warm.status_code == 200 and warm.json()["content"] == ""
    assert warm.json()["tokens_predicted"] == 0
    # A prefix and suffix no earlier request had: only the warm-up can have cached anything.
    reply = http.post("/infill", json=vscode_payload(False, prefix, suffix, chunks, "    ", 4))
    body = reply.json()
    chunk_tokens = len(codestral_tokenizer().encode(SNIPPET + chunks[0]["text"]))
    assert reply.status_code == 200 and body["tokens_cached"] >= 1 + chunk_tokens + 1
    assert body["tokens_evaluated"] == len(expected_ids(prefix, "    ", suffix, chunks))
    timings = {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"}
    assert timings <= set(body["timings"])


def test_props_and_health_as_llama_vscode_reads_them(http, server):
    assert httpx.get(server.url + "/health").status_code == 200
    props = http.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 32768 and props["total_slots"] == 1


def test_without_the_token_infill_refuses_in_llama_cpps_shape(server):
    for method, path in (("POST", "/infill"), ("GET", "/props")):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = httpx.request(method, server.url + path, headers=headers, json={})
            assert response.status_code == 401
            error = response.json()["error"]
            assert error["code"] == 401 and error["type"] == "authentication_error"


def infill_json(**fields) -> bytes:
    return json.dumps({"input_prefix": "x = ", "input_suffix": "", **fields}).encode()


@pytest.mark.parametrize(
    "content,status,fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (rb'{"input_prefix": "\ud83d"}', 400, "surrogate"),
        (infill_json(input_prefix=7), 422, "input_prefix"),
        (infill_json(input_extra="chunks"), 422, "input_extra"),
        (infill_json(input_extra=[{"text": 5}]), 422, "input_extra"),
        (infill_json(n_predict="8"), 422, "n_predict"),
        (infill_json(n_predict=-5), 422, "n_predict"),
        (infill_json(n_predict=2**63), 422, "context window"),
        (infill_json(temperature=9), 422, "temperature"),
        (infill_json(input_prefix="x " * 1_500_000), 413, "context window"),
        (b'{"input_prefix": "' + b"y" * (9 << 20) + b'"}', 413, "MB"),
    ],
)
def test_bad_input_gets_a_llama_cpp_4xx_and_the_server_keeps_serving(
    http, content, status, fragment
):
    response = http.post("/infill", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and fragment in error["message"], error
    ok = http.post("/infill", content=infill_json(n_predict=2))
    assert ok.status_code == 200 and ok.json()["tokens_predicted"] == 2


def run_rules(texts: list[str], clock: list[float] | None = None, monkeypatch=None, **fields):
    """llama.cpp's stop rules applied to a stream of generated texts (a real Request fed by
    hand, as the worker feeds it)."""
    request = Request([1], GenerationParams())
    usage = Usage(1, 0, len(texts), 0.01, 100.0, 0)
    for text in texts:
        request.emit(TextDelta(text, (5,)))
    request.emit(Finished("stop", usage, (1,), (5,) * len(texts)))
    if clock is not None:
        ticks = iter(clock)
        monkeypatch.setattr(infill_api.time, "perf_counter", lambda: next(ticks))
    body = InfillBody.model_validate({"n_predict": 64, **fields})
    text, _final, cut = asyncio.run(infill_api._run(body, request))
    return text, cut, request.cancelled


def test_n_indent_ends_the_completion_at_a_less_indented_line():
    text, cut, cancelled = run_rules(["x = 1", "\n    y = 2", "\nz", " = 3"], n_indent=4)
    assert (text, cut, cancelled) == ("x = 1\n    y = 2\n", True, True)
    text, cut, _ = run_rules(["x = 1", "\n    y = 2", "\n    z = 3"], n_indent=4)
    assert (text, cut) == ("x = 1\n    y = 2\n    z = 3", False)


def test_t_max_predict_ms_stops_after_a_line_break_once_time_is_up(monkeypatch):
    clock = [0.0, 0.0, 0.5, 2.0]  # seconds: the first token, then each one after a line break
    text, cut, _ = run_rules(["a", "\nb", "c", "d", "e"], clock, monkeypatch, t_max_predict_ms=1000)
    assert (text, cut) == ("a\nbcd", True)


def test_n_indent_while_streaming_never_sends_half_a_cut_line():
    request = Request([1], GenerationParams())
    pieces = ["x = 1", "\n", "  ", "  y", "\n", "z", " = 3"]
    for text in pieces:
        request.emit(TextDelta(text, (5,)))
    request.emit(Finished("stop", Usage(1, 0, 7, 0.01, 100.0, 0), (1,), (5,) * 7))
    body = InfillBody.model_validate({"n_predict": 64, "n_indent": 4, "stream": True})

    async def deltas():
        return [item async for item in infill_api._follow(body, request)]

    sent = asyncio.run(deltas())
    text, _final, cut = sent[-1][1]
    assert "".join(delta for delta, _ in sent) == text == "x = 1\n    y\n" and cut
    assert [delta for delta, _ in sent if delta] == ["x = 1", "\n", "    y", "\n"]


def test_streamed_infill_equals_the_whole_reply(http):
    body = {**vim_fim(PREFIX, MIDDLE, SUFFIX, RING, n_predict=12), "response_fields": None}
    whole = http.post("/infill", json=body).json()
    chunks = []
    with http.stream("POST", "/infill", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    assert all(not c["stop"] for c in chunks[:-1]) and chunks[-1]["stop"]
    assert "".join(c["content"] for c in chunks) == whole["content"]
    assert chunks[-1]["timings"]["predicted_n"] == whole["timings"]["predicted_n"] == 12


def test_a_wrong_method_is_a_llama_cpp_405(http):
    response = http.get("/infill")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json()["error"]["code"] == 405
