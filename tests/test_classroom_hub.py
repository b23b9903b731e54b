"""The classroom service in a real JupyterHub on loopback: configurable-http-proxy (npm, from
tests/hub's lockfile), DummyAuthenticator, SimpleLocalProcessSpawner, `configure_hub` pointing
at our own `serve` on the tiny model. Three students: alice (on), bob (codestral-hints), carol
(codestral-off); their kernels' `%%codestral` and their servers' lab route go through the
service with their own hub tokens; the class key is in none of their environments."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websocket

from jupyter_codestral.classroom.policy import HINTS_SYSTEM

from .helpers import wait_until
from .lab_session import free_port

pytestmark = pytest.mark.timeout(600)

CHP = Path(__file__).parent / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
MODEL = "codestral-latest"
OFF_MESSAGE = "turned off by your course"
STUDENTS = ("alice", "bob", "carol")

CONFIG = """
from jupyter_codestral.classroom import configure_hub

c.JupyterHub.bind_url = "http://127.0.0.1:{public}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{"alice", "bob", "carol"}}
c.Authenticator.admin_users = {{"teacher"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
# The admin's own spawner settings, which configure_hub must keep.
c.Spawner.args = ["--allow-root"]
c.Spawner.environment = {{"COURSE": "intro-python"}}
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["test-admin"]}}]
c.JupyterHub.load_groups = {{
    "codestral-off": {{"users": ["carol"]}},
    "codestral-hints": {{"users": ["bob"]}},
}}
configure_hub(
    c, url={upstream!r}, protocol="mistral", api_key_file={key_file!r}, model={model!r},
    port={service}, data_dir={tmp!r}, slots=4,
)
"""


class Hub:
    """The running hub, its REST API as the admin service, and the students' servers."""

    def __init__(self, tmp: Path, upstream: str, key_file: Path):
        self.tmp = tmp
        self.admin_token = secrets.token_hex(16)
        ports = {n: free_port() for n in ("public", "hub", "proxy_api", "service")}
        self.url = f"http://127.0.0.1:{ports['public']}"
        self.service = f"http://127.0.0.1:{ports['service']}/services/codestral"
        singleuser = str(Path(sys.executable).parent / "jupyterhub-singleuser")
        config = CONFIG.format(
            **ports,
            chp=str(CHP),
            tmp=str(tmp),
            singleuser=singleuser,
            admin_token=self.admin_token,
            upstream=upstream,
            key_file=str(key_file),
            model=MODEL,
        )
        (tmp / "jupyterhub_config.py").write_text(config)
        self.log = (tmp / "hub.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.api = httpx.Client(
            base_url=f"{self.url}/hub/api/",
            headers={"Authorization": f"token {self.admin_token}"},
            timeout=30,
        )
        self.kernels: dict[str, str] = {}

    def alive(self) -> bool:
        assert self.proc.poll() is None, (self.tmp / "hub.log").read_text()[-5000:]
        return True

    def token(self, user: str) -> str:
        answer = self.api.post(f"users/{user}/tokens", json={"note": "classroom test"})
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def as_admin(self, path: str, method: str = "GET", **kwargs) -> httpx.Response:
        headers = {"Authorization": f"token {self.admin_token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)

    def complete(self, user: str, source: str = "def add(a, b):\n    return ", **fields):
        """The lab route of `user`'s server: its events."""
        body = {"cells": [{"source": source}], "cell": 0, "cursor": len(source), **fields}
        answer = self.as_admin(f"/user/{user}/codestral/complete", "POST", json=body)
        assert answer.status_code == 200, answer.text
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]

    def fix(self, user: str) -> list[dict]:
        """The fix route of `user`'s server for a failed cell: its events."""
        error = {"ename": "NameError", "evalue": "name 'totl' is not defined"}
        body = {"cells": [{"source": "print(totl)"}], "cell": 0, "error": error}
        answer = self.as_admin(f"/user/{user}/codestral/fix", "POST", json=body)
        assert answer.status_code == 200, answer.text
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]

    def run(self, user: str, code: str, timeout: float = 120) -> str:
        """Run `code` in `user`'s kernel (one per student) over the server's websocket; every
        output's text, joined."""
        if user not in self.kernels:
            started = self.as_admin(f"/user/{user}/api/kernels", "POST", json={"name": "python3"})
            assert started.status_code == 201, started.text
            self.kernels[user] = started.json()["id"]
        ws = websocket.create_connection(
            f"ws://{self.url.removeprefix('http://')}/user/{user}/api/kernels/"
            f"{self.kernels[user]}/channels",
            header=[f"Authorization: token {self.admin_token}"],
            timeout=timeout,
        )
        msg_id, texts = uuid.uuid4().hex, []
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                  "session": uuid.uuid4().hex, "version": "5.3"}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        ws.send(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        try:
            while True:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, body = msg["msg_type"], msg["content"]
                if kind == "stream":
                    texts.append(body["text"])
                elif kind in ("display_data", "update_display_data", "execute_result"):
                    data = body["data"]
                    texts.append(data.get("text/markdown") or data.get("text/plain", ""))
                elif kind == "error":
                    texts.append(f"{body['ename']}: {body['evalue']}")
                elif kind == "status" and body["execution_state"] == "idle":
                    return "\n".join(texts)
        finally:
            ws.close()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # the hub stops its servers and service
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def upstream(models, tmp_path_factory):
    from .helpers import start_server

    runtime = tmp_path_factory.mktemp("upstream-runtime")
    server = start_server(models["mlx"], runtime, "--log-prompts", log=runtime / "serve.log")
    server.log = runtime / "serve.log"  # each prompt as the model gets it
    yield server
    server.proc.terminate()
    server.proc.wait(30)


@pytest.fixture(scope="module")
def hub(upstream, tmp_path_factory):
    if not CHP.exists():
        pytest.fail(
            "configurable-http-proxy is missing: run `npm ci --prefix tests/hub`.", pytrace=False
        )
    tmp = tmp_path_factory.mktemp("hub")
    key_file = tmp / "class-key"
    key_file.write_text(upstream.token)
    key_file.chmod(0o600)
    hub = Hub(tmp, upstream.url, key_file)
    try:
        wait_until(lambda: hub.alive() and _up(f"{hub.url}/hub/api/"), 90, 0.2, "the hub")
        for user in STUDENTS:
            assert hub.api.post(f"users/{user}/server").status_code in (201, 202)
        for user in STUDENTS:
            wait_until(lambda u=user: hub.alive() and _ready(hub, u), 120, 0.2, f"{user}'s server")
        wait_until(lambda: _up(f"{hub.service}/v1/models", hub.admin_token), 30, 0.2, "service")
        hub.class_key = upstream.token
        yield hub
    finally:
        hub.stop()


def _up(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _ready(hub: Hub, user: str) -> bool:
    server = hub.api.get(f"users/{user}").json()["servers"].get("")
    return bool(server and server["ready"])


def test_the_class_key_is_in_no_students_server_or_kernel(hub):
    for user in STUDENTS:
        kernel_env = hub.run(user, "import os; print(sorted(os.environ.items()))")
        server_env = hub.run(user, "import os; print(open(f'/proc/{os.getppid()}/environ').read())")
        for env in (kernel_env, server_env):
            assert hub.class_key not in env
            assert "intro-python" in env  # the admin's own spawner environment is kept
            assert "/services/codestral" in env and "CODESTRAL_PROTOCOL" in env
        own = hub.run(
            user,
            "import os\nprint(os.environ['CODESTRAL_API_KEY'] == "
            "os.environ['JUPYTERHUB_API_TOKEN'])",
        )
        assert own.strip() == "True"


def chat_requests(upstream) -> list[list[dict]]:
    """The chat messages the upstream model was given, in order (its --log-prompts)."""
    records = [
        json.loads(line.removeprefix("codestral-engine: "))
        for line in upstream.log.read_text().splitlines()
        if line.startswith("codestral-engine: {")
    ]
    return [r["messages"] for r in records if r.get("event") == "chat_messages"]


def test_each_students_magic_follows_their_group(hub, upstream):
    answers = {}
    for user in STUDENTS:
        assert "Error" not in hub.run(user, "%load_ext jupyter_codestral")
        before = len(chat_requests(upstream))
        answers[user] = hub.run(user, "%%codestral --max-tokens 8\nSay hello in Python.")
        answers[user, "model got"] = chat_requests(upstream)[before:]
    assert OFF_MESSAGE in answers["carol"], answers["carol"]
    assert answers["carol", "model got"] == []  # refused before the model
    for user in ("alice", "bob"):
        assert OFF_MESSAGE not in answers[user] and "rror" not in answers[user], answers[user]
        assert answers[user].strip(), user
    # Hints: the model is told to explain without code; alice's request goes as she sent it.
    (bob,) = answers["bob", "model got"]
    (alice,) = answers["alice", "model got"]
    assert bob[0]["role"] == "system" and HINTS_SYSTEM in bob[0]["content"]
    assert not any(HINTS_SYSTEM in m["content"] for m in alice)


def test_each_students_lab_route_follows_their_group(hub):
    got = {user: hub.complete(user, max_tokens=100) for user in STUDENTS}
    error = got["carol"][-1]
    assert error["type"] == "error" and OFF_MESSAGE in error["error"]["message"], got["carol"]
    for user in ("alice", "bob"):
        assert got[user][-1]["type"] == "done", got[user]
    text = {u: "".join(e["text"] for e in got[u] if e["type"] == "delta") for u in got}
    tokens = {u: got[u][-1]["usage"]["completion_tokens"] for u in ("alice", "bob")}
    # Hints: one line, a few tokens; alice asked the same and got the long answer.
    assert "\n" not in text["bob"] and tokens["bob"] <= 48, (text["bob"], tokens)
    assert tokens["alice"] > 48, tokens
    refused = hub.fix("carol")[-1]
    assert refused["type"] == "error" and OFF_MESSAGE in refused["error"]["message"], refused
    assert hub.fix("alice")[-1]["type"] == "done"


def test_moving_a_student_into_codestral_off_refuses_within_15_s(hub):
    assert hub.complete("alice", max_tokens=4)[-1]["type"] == "done"
    moved = hub.api.post("groups/codestral-off/users", json={"users": ["alice"]})
    assert moved.status_code == 200, moved.text
    started = time.monotonic()
    try:
        wait_until(
            lambda: hub.complete("alice", max_tokens=4)[-1]["type"] == "error",
            20,
            0.5,
            "alice to be refused",
        )
        assert time.monotonic() - started <= 15
        assert OFF_MESSAGE in hub.complete("alice", max_tokens=4)[-1]["error"]["message"]
    finally:
        hub.api.request("DELETE", "groups/codestral-off/users", json={"users": ["alice"]})
    wait_until(
        lambda: hub.complete("alice", max_tokens=4)[-1]["type"] == "done",
        20,
        0.5,
        "alice to be served again",
    )


def test_a_flood_from_one_student_gets_429_while_another_is_served(hub):
    alice, bob = hub.token("alice"), hub.token("bob")
    results: list[tuple[str, int, float, httpx.Response]] = []
    barrier = threading.Barrier(9)

    def ask(user: str, token: str, tokens: int) -> None:
        body = {"model": MODEL, "prompt": "def f(x):\n", "suffix": "", "max_tokens": tokens,
                "min_tokens": tokens, "temperature": 0}  # fmt: skip
        barrier.wait()
        answer = httpx.post(
            f"{hub.service}/v1/fim/completions",
            json=body,
            timeout=120,
            headers={"Authorization": f"Bearer {token}"},
        )
        results.append((user, answer.status_code, time.monotonic(), answer))

    threads = [threading.Thread(target=ask, args=("alice", alice, 300)) for _ in range(8)]
    threads.append(threading.Thread(target=ask, args=("bob", bob, 8)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(s for u, s, _, _ in results if u == "alice")
    assert set(statuses) == {200, 429} and statuses.count(429) >= 1, statuses
    refused = next(r for u, s, _, r in results if s == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "too many" in refused.json()["message"]
    (bob_done,) = [(s, t) for u, s, t, _ in results if u == "bob"]
    assert bob_done[0] == 200
    last_alice = max(t for u, s, t, _ in results if u == "alice" and s == 200)
    assert bob_done[1] < last_alice  # bob did not wait for alice's queue to drain


def test_usage_shows_counts_to_an_admin_and_only_ones_own_to_a_student(hub):
    hub.complete("alice", max_tokens=4)
    hub.complete("carol", max_tokens=4)
    teacher = {"Authorization": f"token {hub.token('teacher')}"}
    rows = httpx.get(f"{hub.service}/usage", headers=teacher).json()["rows"]
    by_user = {row["user"]: row for row in rows}
    assert by_user["alice"]["requests"] >= 1 and by_user["alice"]["prompt_tokens"] > 0
    assert by_user["alice"]["completion_tokens"] > 0
    assert by_user["carol"]["refusals"] >= 1 and by_user["carol"]["requests"] == 0
    page = httpx.get(f"{hub.service}/usage.html", headers=teacher)
    assert page.status_code == 200 and "<td>alice</td>" in page.text

    student = {"Authorization": f"token {hub.token('bob')}"}
    own = httpx.get(f"{hub.service}/usage", headers=student).json()["rows"]
    assert own and {row["user"] for row in own} == {"bob"}
    refused = httpx.get(f"{hub.service}/usage", params={"user": "alice"}, headers=student)
    assert refused.status_code == 403 and "only their own" in refused.json()["message"]
    assert httpx.get(f"{hub.service}/usage.html", headers=student).status_code == 403
    assert httpx.get(f"{hub.service}/usage").status_code == 401


def test_the_official_sdk_gets_the_upstreams_answers_through_the_service(hub, upstream):
    from mistralai.client import Mistral

    direct = Mistral(api_key=upstream.token, server_url=upstream.url)
    served = Mistral(api_key=hub.token("alice"), server_url=hub.service)
    fim = {"model": MODEL, "prompt": "def area(r):\n    return ", "suffix": "\n", "max_tokens": 12}
    expected = direct.fim.complete(**fim)
    got = served.fim.complete(**fim)
    assert got.choices[0].message.content == expected.choices[0].message.content
    assert got.usage.completion_tokens == expected.usage.completion_tokens
    chunks = list(served.fim.stream(**fim))
    assert "".join(c.data.choices[0].delta.content or "" for c in chunks) == (
        expected.choices[0].message.content
    )
    assert chunks[-1].data.usage.prompt_tokens == expected.usage.prompt_tokens
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    streamed = list(served.chat.stream(**chat))
    text = "".join(c.data.choices[0].delta.content or "" for c in streamed)
    assert text == direct.chat.complete(**chat).choices[0].message.content
    listing = served.models.list()
    assert [m.id for m in listing.data] == [MODEL]


def test_bad_input_gets_a_4xx_with_a_json_body(hub):
    alice = {"Authorization": f"Bearer {hub.token('alice')}"}
    url = f"{hub.service}/v1/fim/completions"
    cases = [
        (alice, b"{not json", 422, "Invalid"),
        (alice, json.dumps({"model": MODEL}).encode(), 422, "prompt"),
        (alice, json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 0}).encode(), 422,
         "max_tokens"),
        (alice, json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, MODEL),
        ({}, json.dumps({"model": MODEL, "prompt": "x"}).encode(), 401, "JupyterHub API token"),
        ({"Authorization": "Bearer not-a-token"}, b"{}", 401, "JupyterHub API token"),
    ]  # fmt: skip
    for headers, body, status, words in cases:
        answer = httpx.post(url, content=body, headers=headers, timeout=30)
        assert answer.status_code == status, (body, answer.text)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert words in answer.json()["message"], answer.json()


def test_status_names_the_course_service_and_the_students_mode(hub):
    for user, mode in (("alice", "on"), ("bob", "hints"), ("carol", "off")):
        status = hub.run(user, "%codestral status")
        assert "/services/codestral" in status, status
        assert f"the course's Codestral service (JupyterHub); your mode: {mode}" in status


def test_when_the_upstream_is_down_students_are_told_to_tell_their_teacher(hub, upstream):
    upstream.proc.terminate()  # the last test: the course's server goes away
    upstream.proc.wait(30)
    error = hub.complete("alice", max_tokens=4)[-1]
    assert error["type"] == "error", error
    assert "course's Codestral server is unreachable" in error["error"]["message"]
    assert "tell your teacher" in error["error"]["message"]
    answer = hub.run("alice", "%%codestral --max-tokens 4\nSay hello.")
    assert "tell your teacher" in answer and "codestral-engine serve" not in answer, answer
