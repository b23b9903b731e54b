"""The classroom service's parts without a hub: the fair share's turns, the usage log across
restarts, the hints mode's requests, and `configure_hub` keeping the admin's own settings (read
back through JupyterHub's and the spawner's own traitlets)."""

from __future__ import annotations

import asyncio

import pytest
from jupyterhub.app import JupyterHub
from jupyterhub.spawner import LocalProcessSpawner
from traitlets.config import Config

from jupyter_codestral.classroom import configure_hub
from jupyter_codestral.classroom.fair_share import Busy, FairShare
from jupyter_codestral.classroom.hub_config import ACCESS_SCOPE, student_key
from jupyter_codestral.classroom.policy import HINTS_SYSTEM, chat_request, fim_params
from jupyter_codestral.classroom.usage import UsageLog, usage_html
from jupyter_codestral.client.shapes import Sampling, usage

KEY = "sk-class-secret-0123456789"


async def _until(condition, turns: int = 1000) -> None:
    """Let the event loop run until `condition()` holds (a bounded number of turns, no clock:
    a busy machine only makes each turn slower)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _served_order(share: FairShare, requests: list[str]) -> list[str]:
    """Who got the upstream in which order, each request holding it for one loop turn."""
    order: list[str] = []

    async def ask(user: str) -> None:
        async with share.turn(user):
            order.append(user)
            await asyncio.sleep(0.01)

    tasks = []
    for user in requests:
        tasks.append(asyncio.ensure_future(ask(user)))
        await asyncio.sleep(0)  # arrive in this order
    await asyncio.gather(*tasks)
    return order


def test_a_students_queue_delays_another_by_at_most_one_request():
    share = FairShare(slots=1, running=2, waiting=4)
    order = asyncio.run(_served_order(share, ["alice"] * 5 + ["bob", "carol"]))
    # alice's first request was running; bob and carol go next, before alice's queue.
    assert order[:3] == ["alice", "bob", "carol"], order
    assert order.count("alice") == 5


def test_past_the_bound_a_student_is_refused_and_others_are_not():
    async def scenario():
        share = FairShare(slots=8, running=2, waiting=4)
        held = asyncio.Event()

        async def hold(user: str) -> None:
            async with share.turn(user):
                await held.wait()

        tasks = [asyncio.ensure_future(hold("alice")) for _ in range(6)]
        await _until(lambda: share.load("alice") == (2, 4))
        with pytest.raises(Busy) as refused:
            await share.turn("alice").__aenter__()
        async with share.turn("bob"):
            assert share.load("bob") == (1, 0)
        tasks[-1].cancel()  # a student who leaves while waiting frees the place
        await _until(lambda: share.load("alice") == (2, 3))
        held.set()
        await asyncio.gather(*tasks[:-1])
        assert share.load("alice") == (0, 0)
        return refused.value

    busy = asyncio.run(scenario())
    assert busy.status == 429 and busy.retry_after >= 1 and busy.kind == "busy"


def test_usage_is_counted_per_student_and_day_and_kept_across_restarts(tmp_path):
    log = UsageLog(tmp_path / "usage.sqlite")
    log.add("alice", requests=1, prompt_tokens=10, completion_tokens=5)
    log.add("alice", requests=1, prompt_tokens=3, completion_tokens=2)
    log.add("carol", refusals=1)
    log.close()
    log = UsageLog(tmp_path / "usage.sqlite")
    alice = log.rows("alice")
    assert len(alice) == 1
    assert alice[0] | {"day": None} == {
        "day": None,
        "user": "alice",
        "requests": 2,
        "prompt_tokens": 13,
        "completion_tokens": 7,
        "refusals": 0,
    }
    assert {r["user"] for r in log.rows()} == {"alice", "carol"}
    assert "<td>carol</td>" in usage_html(log.rows())
    with pytest.raises(ValueError):
        log.add("alice", tokens=1)


def test_hints_mode_asks_for_one_short_line_and_explanations():
    assert fim_params("on", Sampling(max_tokens=200)) == Sampling(max_tokens=200)
    hinted = fim_params("hints", Sampling(max_tokens=200, stop="END"))
    assert hinted.max_tokens <= 48 and hinted.stop == ["END", "\n"]
    messages, params = chat_request("hints", [{"role": "user", "content": "fix it"}], Sampling())
    assert messages[0] == {"role": "system", "content": HINTS_SYSTEM}
    assert params.max_tokens <= 200
    system = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "?"}]
    merged, _ = chat_request("hints", system, Sampling())
    assert len(merged) == 2 and merged[0]["content"].endswith("Be kind.")


def _configured(c: Config, tmp_path) -> Config:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    configure_hub(
        c,
        url="http://gpu:8000",
        protocol="vllm",
        api_key_file=key_file,
        model="codestral-22b",
        port=10400,
        data_dir=tmp_path,
    )
    return c


def test_configure_hub_appends_to_the_admins_settings(tmp_path):
    c = Config()
    c.Spawner.args = ["--allow-root"]
    c.Spawner.environment = {"COURSE": "intro", "CODESTRAL_URL": "http://admins-own"}
    c.JupyterHub.load_roles = [
        {"name": "server", "scopes": ["users:activity!user"]},
        {"name": "user", "scopes": ["self", "read:users:name"]},  # extra_user_scopes ignored
    ]
    c.JupyterHub.load_groups = {"codestral-off": {"users": ["carol"]}}
    c.JupyterHub.services = [{"name": "grader", "url": "http://127.0.0.1:9000"}]
    _configured(c, tmp_path)
    hub = JupyterHub(config=c)
    spawner = LocalProcessSpawner(config=c)
    assert spawner.args == ["--allow-root"]
    env = spawner.environment
    assert env["COURSE"] == "intro" and env["CODESTRAL_URL"] == "http://admins-own"
    assert env["CODESTRAL_PROTOCOL"] == "mistral" and env["CODESTRAL_API_KEY"] is student_key
    assert [s["name"] for s in hub.services] == ["grader", "codestral"]
    roles = {r["name"]: r for r in hub.load_roles}
    assert roles["server"]["scopes"] == ["users:activity!user", ACCESS_SCOPE]
    assert hub.load_groups["codestral-off"] == {"users": ["carol"]}
    assert roles["user"]["scopes"] == ["self", "read:users:name", ACCESS_SCOPE]
    elsewhere = Config()
    configure_hub(
        elsewhere,
        url="http://gpu:8000",
        ip="10.0.0.5",
        student_url="http://proxy-public/services/codestral/",
    )
    env = LocalProcessSpawner(config=elsewhere).environment
    assert env["CODESTRAL_URL"] == "http://proxy-public/services/codestral"
    assert JupyterHub(config=elsewhere).services[0]["url"].startswith("http://10.0.0.5:")


def test_configure_hub_on_a_fresh_config_keeps_the_hubs_defaults_and_no_key(tmp_path):
    c = _configured(Config(), tmp_path)
    hub = JupyterHub(config=c)
    spawner = LocalProcessSpawner(config=c)
    roles = {r["name"]: r for r in hub.load_roles}
    assert set(roles["server"]["scopes"]) >= {
        "users:activity!user",
        "access:servers!server",
        ACCESS_SCOPE,
    }
    assert roles["codestral-service"]["scopes"] == [
        "read:groups!group=codestral-off",
        "read:groups!group=codestral-hints",
    ]
    assert set(hub.load_groups) >= {"codestral-off", "codestral-hints", "codestral-teachers"}
    assert ACCESS_SCOPE in hub.extra_user_scopes and "user" not in roles
    env = spawner.environment
    assert env["CODESTRAL_URL"] == "http://127.0.0.1:10400/services/codestral"
    (service,) = hub.services
    everything = repr((dict(env), service, hub.load_roles))
    assert KEY not in everything and str(tmp_path / "key") in service["command"]


def test_usage_keeps_the_cache_and_timings_through_the_classroom():
    """Our engine's usage (Mistral's shape, with its cache and timings) is read into the one
    Usage and written back whole at the classroom's edge; vLLM's flat usage stays plain."""
    ours = {
        "prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 8}, "draft_tokens": 0,
        "accepted_draft_tokens": 0,
        "timings": {"time_to_first_token_s": 0.2, "decode_tokens_per_s": 30.0,
                    "peak_memory_bytes": 1},
    }  # fmt: skip
    read = usage(ours)
    assert (read.cached_prompt_tokens, read.time_to_first_token_s) == (8, 0.2)
    again = usage(read.mistral())
    assert (again.cached_prompt_tokens, again.decode_tokens_per_s) == (8, 30.0)
    flat = usage({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})  # vLLM's
    assert flat.mistral() == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
