"""Connections that misbehave cannot block the engine (a real `serve` on the tiny model): silent
or slow connections are closed, a flood past the cap gets a retryable 503, a huge prompt is
refused before it is tokenized and tokenizing never stalls the event loop, a half-closed
request is still answered, and a client that leaves mid-body costs one log line."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from codestral_engine.errors import ContextLengthError
from codestral_engine.serving.http_limits import MAX_CONNECTIONS
from codestral_engine.serving.server import ServerState, create_app

from .helpers import TOKEN, start_server, wait_until


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("runtime")
    srv = start_server(models["mlx"], runtime, "--token", TOKEN, log=runtime / "engine.log")
    srv.log = runtime / "engine.log"
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=60)


def address(srv) -> tuple[str, int]:
    host, port = srv.url.removeprefix("http://").split(":")
    return host, int(port)


def raw_request(body: bytes, path: str = "/v1/fim/completions") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_silent_and_slow_connections_are_closed_and_a_real_request_gets_through(server):
    """More silent connections than the cap, and some sending headers a byte at a time: a
    real request is answered at once or told when to retry (503, Retry-After), the server
    closes the idle ones after its header timeout, and then the request is served."""
    silent = [socket.create_connection(address(server)) for _ in range(MAX_CONNECTIONS + 44)]
    slow = [socket.create_connection(address(server)) for _ in range(10)]
    for sock in slow:
        sock.sendall(b"POST /v1/fim/completions HTTP/1.1\r\n")  # and nothing more
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"model": "codestral-latest", "prompt": "def f():", "max_tokens": 2}
    first = httpx.post(server.url + "/v1/fim/completions", json=body, headers=headers, timeout=60)
    assert first.status_code in (200, 503), first.text
    if first.status_code == 503:
        assert int(first.headers["Retry-After"]) > 0 and first.json()["object"] == "error"
    for sock in silent + slow:
        sock.setblocking(False)
    wait_until(
        lambda: all(closed_by_server(s) for s in silent + slow),
        timeout=60,
        what="the server to close connections that sent no complete request",
    )
    served = httpx.post(server.url + "/v1/fim/completions", json=body, headers=headers, timeout=60)
    assert served.status_code == 200, served.text
    for sock in silent + slow:
        sock.close()
    assert "Traceback" not in server.log.read_text()


def test_a_half_closed_request_is_still_answered(server):
    """As `nc -N` sends it: the whole request, then the write side shut."""
    body = json.dumps({"model": "codestral-latest", "prompt": "def f():", "max_tokens": 2})
    with socket.create_connection(address(server), timeout=60) as sock:
        sock.sendall(raw_request(body.encode()))
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100 Continue"):  # interim answers, while it generates
        head, _, payload = payload.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(payload)["choices"][0]["finish_reason"] == "length"


def test_a_client_that_leaves_mid_body_costs_one_log_line(server):
    before = server.log.read_text()
    with socket.create_connection(address(server), timeout=60) as sock:
        sock.sendall(raw_request(b"x" * 1000)[:-990])  # headers and 10 bytes of 1000
    wait_until(
        lambda: "client_gone" in server.log.read_text()[len(before) :], what="the server to notice"
    )
    added = server.log.read_text()[len(before) :]
    assert len(added.splitlines()) == 1 and "Traceback" not in added, added


def test_a_huge_content_parts_body_is_refused_while_health_keeps_answering(server):
    """7 MB of text as a list of parts (not a string): refused for its size before anything
    tokenizes it, while /health, polled meanwhile, keeps answering."""
    text = "x = 1\n" * (7_000_000 // 6)
    parts = [{"type": "text", "text": text}]
    body = {"model": "codestral-latest", "messages": [{"role": "user", "content": parts}]}
    healths: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            healths.append(httpx.get(server.url + "/health", timeout=30).status_code)

    poller = threading.Thread(target=poll)
    poller.start()
    wait_until(lambda: healths, what="the first health answer")  # polling before the post
    try:
        refused = httpx.post(
            server.url + "/v1/chat/completions",
            json=body,
            timeout=120,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    finally:
        done.set()
        poller.join()
    assert refused.status_code == 413, refused.text
    assert healths and set(healths) == {200}


def test_content_parts_are_size_checked_before_tokenizing(engine, monkeypatch):
    limit = engine.context_length * engine.tokenizer.max_token_chars
    monkeypatch.setattr(engine.tokenizer, "encode_chat", lambda *a, **k: pytest.fail("tokenized"))
    part = {"type": "text", "text": "x" * (limit // 2 + 1)}
    with pytest.raises(ContextLengthError):
        engine.chat([{"role": "user", "content": [part, part]}])


async def test_prompts_are_tokenized_off_the_event_loop(engine, models, monkeypatch):
    """The route tokenizes (engine.fim / engine.chat) on its own thread, so a long prompt
    never stalls the other requests (/health, status, streams)."""
    state = ServerState(model_path=models["mlx"], token=TOKEN, engine=engine, state="ready")
    threads = []
    for name in ("fim", "chat"):
        real = getattr(engine, name)

        def spy(*args, _real=real, **kwargs):
            threads.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(engine, name, spy)
    transport = httpx.ASGITransport(app=create_app(state))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
        fim = {"model": "codestral-latest", "prompt": "def f():", "max_tokens": 2}
        chat = {"model": "codestral-latest", "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        assert (await client.post("/v1/fim/completions", json=fim, headers=headers)).is_success
        assert (await client.post("/v1/chat/completions", json=chat, headers=headers)).is_success
    assert len(threads) == 2 and all(t.startswith("tokenize") for t in threads), threads


# An honest API surface: what the engine does not do is refused, not answered as if done.

UNHONOURED = {
    "n": 2, "logprobs": True, "top_logprobs": 3, "presence_penalty": 0.5,
    "frequency_penalty": 0.5, "tools": [{"type": "function", "function": {"name": "f"}}],
    "tool_choice": "required", "response_format": {"type": "json_object"}, "safe_prompt": True,
}  # fmt: skip
NO_OPS = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0.0,
          "tools": [], "tool_choice": "auto", "response_format": {"type": "text"}}  # fmt: skip


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/fim/completions"])
def test_fields_the_engine_does_not_implement_are_refused_by_name(server, route):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = {"model": "codestral-latest", "max_tokens": 2}
    base |= {"prompt": "x"} if "fim" in route else {"messages": [{"role": "user", "content": "x"}]}
    for name, value in UNHONOURED.items():
        refused = httpx.post(server.url + route, json=base | {name: value}, headers=headers)
        assert refused.status_code == 422, (name, refused.text)
        assert refused.json()["detail"][0]["loc"] == ["body", name]
        assert f"'{name}'" in refused.json()["message"]
    both = httpx.post(server.url + route, json=base | {"n": 3, "logprobs": True}, headers=headers)
    assert "'n'" in both.json()["message"] and "'logprobs'" in both.json()["message"]
    asked_nothing = httpx.post(server.url + route, json=base | NO_OPS, headers=headers)
    assert asked_nothing.status_code == 200, asked_nothing.text


def test_the_mistral_sdk_gets_its_validation_error_for_n(server):
    from mistralai.client import Mistral
    from mistralai.client.errors import HTTPValidationError

    mistral = Mistral(api_key=TOKEN, server_url=server.url)
    with pytest.raises(HTTPValidationError) as refused:
        mistral.chat.complete(
            model="codestral-latest", n=2, max_tokens=2, messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.data.detail[0].loc == ["body", "n"]


def test_json_only_no_redirects_and_one_framing(server):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = json.dumps({"model": "codestral-latest", "prompt": "x", "max_tokens": 1})
    for media_type in ("text/plain", "application/x-www-form-urlencoded"):
        refused = httpx.post(
            server.url + "/v1/fim/completions",
            content=body,
            headers=headers | {"Content-Type": media_type},
        )
        assert refused.status_code == 415 and media_type in refused.json()["message"]
    for path in ("/v1/status/", "/v1/models/", "/v1/fim/completions/"):
        answer = httpx.request(
            "GET" if "fim" not in path else "POST", server.url + path, headers=headers, content=body
        )
        assert answer.status_code == 404 and "location" not in answer.headers, path
    with socket.create_connection(address(server), timeout=60) as sock:
        sock.sendall(
            f"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 5\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n{body}\r\n0\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after it
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"Content-Length and Transfer-Encoding" in answer
