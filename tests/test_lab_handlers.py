"""The server extension's routes in a real jupyter_server (pytest-jupyter) against the real
engine server on the tiny model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal

import httpx
import pytest
from tornado.httpclient import HTTPClientError

from jupyter_codestral.client.engine_client import stop_local_server
from jupyter_codestral.lab.handlers import ROUTES

from .helpers import TOKEN, start_server, wait_until_async

CELLS = [
    {"cell_type": "markdown", "source": "Load the data"},
    {"cell_type": "code", "source": "import math\nradius_cm = 3"},
    {"cell_type": "code", "source": "def area(r):\n    return "},
    {"cell_type": "code", "source": "print(area(radius_cm))"},
]
BODY = {"cells": CELLS, "cell": 2, "cursor": len(CELLS[2]["source"]), "max_tokens": 12}
# A cell that raised, with its error output as IPython 9 formats it (colours and all).
FAILED = {"cell_type": "code", "source": "ratio = radius_cm / diameter_cm"}
ERROR_OUTPUT = {
    "output_type": "error",
    "ename": "NameError",
    "evalue": "name 'diameter_cm' is not defined",
    "traceback": [
        "\x1b[31m" + "-" * 75 + "\x1b[39m",
        "\x1b[31mNameError\x1b[39m" + " " * 33 + "Traceback (most recent call last)",
        "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[4]\x1b[39m\x1b[32m, line 1\x1b[39m\n"
        "\x1b[32m----> 1\x1b[39m ratio = radius_cm / \x1b[43mdiameter_cm\x1b[49m\n",
        "\x1b[31mNameError\x1b[39m: name 'diameter_cm' is not defined",
    ],
}
FIX_BODY = {
    "cells": [*CELLS[:2], FAILED, CELLS[3]], "cell": 2, "error": ERROR_OUTPUT,
    "facts": ["radius_cm: int", "unrelated_frame: pandas.DataFrame, 3 rows x 2 columns"],
}  # fmt: skip


@pytest.fixture(scope="module")
def engine_server(models, tmp_path_factory):
    srv = start_server(models["hf"], tmp_path_factory.mktemp("runtime"), "--token", TOKEN)
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(timeout=30)


@pytest.fixture
def jp_runtime_dir(engine_server):
    """The Jupyter server finds the engine through the connection file in its runtime dir."""
    return engine_server.runtime


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_codestral": True}}}


@pytest.fixture
def codestral(jp_serverapp):
    return jp_serverapp.web_app.settings["codestral"]


def engine_json(srv, path: str, **kwargs) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if "json" in kwargs:
        return httpx.post(srv.url + path, headers=headers, timeout=60, **kwargs).json()
    return httpx.get(srv.url + path, headers=headers, timeout=60).json()


def events(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


async def complete(jp_fetch, body: dict) -> list[dict]:
    response = await jp_fetch("codestral", "complete", method="POST", body=json.dumps(body))
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    return events(response.body)


async def test_every_route_refuses_unauthenticated_requests(jp_fetch):
    for name in ROUTES:
        for method in ("GET", "POST"):
            with pytest.raises(HTTPClientError) as info:
                await jp_fetch(
                    "codestral",
                    name,
                    method=method,
                    headers={"Authorization": ""},
                    body=json.dumps(BODY) if method == "POST" else None,
                )
            assert info.value.code in (401, 403, 405)
            if method == ("GET" if name == "status" else "POST"):
                assert info.value.code in (401, 403)


async def test_completion_streams_the_engines_fim_of_the_notebook_context(
    jp_fetch, codestral, engine_server
):
    got = await complete(jp_fetch, BODY)
    assert got[0]["type"] == "context" and got[0]["cells_above"] == 2
    deltas = [e["text"] for e in got if e["type"] == "delta"]
    assert len(deltas) >= 2
    assert got[-1]["type"] == "done" and got[-1]["usage"]["completion_tokens"] == 12

    # The same prompt straight to the engine gives the same greedy text.
    context = codestral.prompts.fim_context(codestral_body(BODY))
    assert "radius_cm = 3" in context.prefix and "# Load the data" in context.prefix
    assert context.suffix.startswith("\n\nprint(area(radius_cm))")
    direct = engine_json(
        engine_server,
        "/v1/fim/completions",
        json={
            "model": "codestral-latest",
            "prompt": context.prefix,
            "suffix": context.suffix,
            "max_tokens": 12,
        },
    )
    assert "".join(deltas) == direct["choices"][0]["message"]["content"]


def codestral_body(body: dict):
    from jupyter_codestral.lab.wire import CompleteRequest

    return CompleteRequest.model_validate(body)


async def test_second_request_reuses_the_prompt_cache(jp_fetch):
    await complete(jp_fetch, BODY)
    typed = dict(
        BODY,
        cells=[*CELLS[:2], {"cell_type": "code", "source": CELLS[2]["source"] + "m"}, CELLS[3]],
        cursor=BODY["cursor"] + 1,
    )
    done = (await complete(jp_fetch, typed))[-1]
    usage = done["usage"]
    assert usage["cached_prompt_tokens"] >= usage["prompt_tokens"] - 3


@pytest.mark.parametrize("route", ["complete", "fix"])
async def test_closing_the_connection_cancels_the_engine_request(
    jp_fetch, jp_base_url, jp_http_port, jp_auth_header, engine_server, route
):  # jp_fetch: its fixtures make the test server accept connections on jp_http_port
    before = engine_json(engine_server, "/v1/status")["finished_requests"].get("cancelled", 0)
    url = f"http://localhost:{jp_http_port}{jp_base_url}codestral/{route}"
    # Long answers, so the request still runs when the client leaves: 200 tokens of ghost
    # text; a fix of a 150-line cell may take twice its ~2,000 tokens.
    long_cell = {"cell_type": "code", "source": "".join(
        f"value_{i} = radius_cm * {i}\n" for i in range(150)) + FAILED["source"]}  # fmt: skip
    fix_body = dict(FIX_BODY, cells=[*CELLS[:2], long_cell, CELLS[3]])
    body = dict(BODY, max_tokens=200) if route == "complete" else fix_body
    async with httpx.AsyncClient(headers=dict(jp_auth_header), timeout=30) as client:
        if route == "complete":  # leave after the first text: the connection closes
            async with client.stream("POST", url, json=body) as response:
                async for line in response.aiter_lines():
                    if json.loads(line)["type"] == "delta":
                        break
        # A fix's first text may be held back while it could still be a fence: leave while
        # the engine runs it instead; closing the client closes the connection.
        sending = asyncio.ensure_future(client.post(url, json=body)) if route == "fix" else None
        if sending:

            def running() -> int:
                return engine_json(engine_server, "/v1/status")["running_requests"]

            await wait_until_async(lambda: sending.done() or running(), 30, 0.02, "the fix to run")
            assert not sending.done(), "the request ended before the test could leave it"
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending

    def cancelled() -> dict | None:
        status = engine_json(engine_server, "/v1/status")
        return status if status["finished_requests"].get("cancelled", 0) > before else None

    status = await wait_until_async(cancelled, timeout=30, what="the engine request's cancel")
    assert status["last_request"]["completion_tokens"] < 200 * (1 if route == "complete" else 9)


async def test_first_line_time_budget_ends_at_a_line_break(jp_fetch):
    def text(events):
        return "".join(e["text"] for e in events if e["type"] == "delta")

    # The tiny model's greedy text for one of these cursors runs over several lines.
    above = [
        {"cell_type": "markdown", "source": "# Sales\nTotals per region."},
        {"cell_type": "code", "source": "secret_total_xyz = 41 + 1"},
    ]
    for source in ("for region in range(3):", "for i in range(3):", "def f():\n    "):
        cells = [*above, {"cell_type": "code", "source": source}]
        body = dict(BODY, cells=cells, cursor=len(source), max_tokens=200)
        free = text(await complete(jp_fetch, body))
        if re.search(r"[\r\n]", free.strip()):
            break
    else:
        pytest.fail("no suggestion with a line break to test the time budget on")
    budget = await complete(jp_fetch, dict(body, time_budget_ms=1))
    assert budget[-1]["finish_reason"] == "time_budget"
    assert not re.search(r"[\r\n]", text(budget).strip())
    assert free.startswith(text(budget))


async def test_single_line_requests_stop_at_the_line_break(jp_fetch):
    got = await complete(jp_fetch, dict(BODY, max_tokens=200, multiline=False))
    text = "".join(e["text"] for e in got if e["type"] == "delta")
    assert not re.search(r"[\r\n]", text)


async def test_bad_input_is_a_typed_400(jp_fetch):
    for bad in (
        {"cells": CELLS},  # no cell/cursor
        dict(BODY, cell=9),
        dict(BODY, cursor=10_000),
        dict(BODY, max_tokens="5"),
        dict(BODY, max_tokens=100_000),
        dict(BODY, surprise=True),
    ):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("codestral", "complete", method="POST", body=json.dumps(bad))
        assert info.value.code == 400
        error = json.loads(info.value.response.body)["error"]
        assert error["kind"] == "bad_request" and error["message"]
    assert (await complete(jp_fetch, BODY))[-1]["type"] == "done"  # still serving


async def test_server_setting_turns_completions_off_for_everyone(jp_fetch, codestral):
    codestral.settings.enabled = False
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("codestral", "complete", method="POST", body=json.dumps(BODY))
    assert info.value.code == 403
    error = json.loads(info.value.response.body)["error"]
    assert error["kind"] == "disabled" and "CodestralCompletion.enabled" in error["fix"]
    status = json.loads((await jp_fetch("codestral", "status")).body)
    assert status["settings"]["enabled"] is False


async def test_remote_api_with_a_wrong_key_reports_how_to_fix_it(
    jp_fetch, codestral, engine_server
):
    codestral.settings.engine = "remote"
    codestral.settings.url = engine_server.url
    codestral.settings.api_key = "wrong-key"
    got = await complete(jp_fetch, BODY)
    assert got[-1]["type"] == "error"
    assert got[-1]["error"]["kind"] == "auth" and "api_key" in got[-1]["error"]["fix"]
    codestral.settings.api_key = TOKEN
    assert (await complete(jp_fetch, BODY))[-1]["type"] == "done"


async def test_the_shared_engine_starts_on_first_use(
    jp_fetch, codestral, models, tmp_path, monkeypatch
):
    runtime = tmp_path / "fresh-runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    codestral.settings.model = str(models["hf"])
    try:
        first = (await complete(jp_fetch, BODY))[-1]
        assert first["type"] == "error" and first["error"]["kind"] == "engine_starting"

        async def settled() -> dict | None:
            status = json.loads((await jp_fetch("codestral", "status")).body)
            if status["state"] in ("ready", "error"):
                return status
            assert status["state"] in ("starting", "loading", "stopped")
            return None

        status = await wait_until_async(settled, timeout=90, interval=0.1, what="the engine")
        assert status["state"] == "ready", status
        assert (await complete(jp_fetch, BODY))[-1]["type"] == "done"
        log = runtime / "codestral-engine.log"  # this user's only, like the connection file
        assert log.stat().st_mode & 0o777 == 0o600
    finally:
        await asyncio.to_thread(stop_local_server)


async def test_warm_up_fills_the_prompt_cache_without_text(jp_fetch):
    cells = [*CELLS[:2], {"cell_type": "code", "source": "def volume(r):\n    return "}, CELLS[3]]
    body = dict(BODY, cells=cells, cursor=len(cells[2]["source"]))
    warm = await complete(jp_fetch, dict(body, warm=True))
    assert [e["type"] for e in warm] == ["context", "done"]
    done = (await complete(jp_fetch, body))[-1]
    usage = done["usage"]
    assert usage["cached_prompt_tokens"] >= usage["prompt_tokens"] - 1


async def test_the_cursor_counts_code_points_after_an_emoji(jp_fetch):
    """The wire's convention: code points, as JupyterLab's completer and Python count. The cell
    is 12 code points (13 UTF-16 units); its end is cursor 12, for a warm-up as for typing."""
    cell = {"cell_type": "code", "source": "s = '\U0001f600'\nx = "}
    body = {"cells": [cell], "cell": 0, "cursor": 12, "max_tokens": 2}
    for warm in (False, True):
        assert (await complete(jp_fetch, dict(body, warm=warm)))[-1]["type"] == "done"
    with pytest.raises(HTTPClientError) as utf16:  # the UTF-16 count is past the end
        await complete(jp_fetch, dict(body, cursor=13))
    assert utf16.value.code == 400 and b"outside the cell" in utf16.value.response.body


async def fix(jp_fetch, body: dict) -> list[dict]:
    response = await jp_fetch("codestral", "fix", method="POST", body=json.dumps(body))
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    return events(response.body)


async def test_a_cell_too_long_to_fix_whole_is_refused_with_advice_that_can_work(jp_fetch):
    """A 1 MB cell: not the engine's context error and its 'lower Context budget' (which
    cannot help), but what can: a smaller cell."""
    huge = dict(FAILED, source="ratio = radius_cm / diameter_cm\n" * 32_000)
    body = dict(FIX_BODY, cells=[*CELLS[:2], huge, CELLS[3]])
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("codestral", "fix", method="POST", body=json.dumps(body))
    error = json.loads(refused.value.response.body)["error"]
    assert refused.value.code == 413 and error["kind"] == "cell_too_long", error
    assert "cell of their own" in error["fix"] and "Context budget" not in error["fix"]


async def test_fix_streams_the_engines_answer_to_the_cell_its_traceback_and_neighbours(
    jp_fetch, codestral, engine_server
):
    from jupyter_codestral.context.fix import EXPLAIN_TOKENS, clean_proposal
    from jupyter_codestral.lab.wire import FixRequest

    got = await fix(jp_fetch, FIX_BODY)
    assert got[-1]["type"] == "done", got[-1]
    proposal = "".join(e["text"] for e in got if e["type"] == "delta")

    messages, max_tokens = codestral.prompts.fix_request(FixRequest.model_validate(FIX_BODY))
    system, asked = messages[0]["content"], messages[1]["content"]
    assert "whole corrected cell" in system and "no Markdown fences" in system
    assert "ratio = radius_cm / diameter_cm" in asked
    assert "Cell In[4], line 1\n----> 1 ratio = radius_cm / diameter_cm" in asked
    assert asked.count("NameError: name 'diameter_cm' is not defined") == 1
    assert "\x1b" not in asked and "Traceback (most recent call last)" not in asked
    assert "radius_cm = 3" in asked and "# Load the data" in asked  # the cells above
    assert "print(area(radius_cm))" in asked  # and below
    assert "- radius_cm: int" in asked and "unrelated_frame" not in asked  # names it mentions
    assert (
        max_tokens == 2 * codestral.prompts.counter(FAILED["source"]) + 256
    )  # the cell again, and more

    # The route streams the engine's greedy answer to exactly these messages, cleaned.
    direct = engine_json(
        engine_server,
        "/v1/chat/completions",
        json={
            "model": "codestral-latest",
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    )
    answer = direct["choices"][0]["message"]["content"]
    assert proposal.strip("\n") == clean_proposal(answer).strip("\n")

    explained = await fix(jp_fetch, dict(FIX_BODY, mode="explain"))
    assert explained[-1]["type"] == "done"
    assert explained[-1]["usage"]["completion_tokens"] <= EXPLAIN_TOKENS
    messages, max_tokens = codestral.prompts.fix_request(
        FixRequest.model_validate(dict(FIX_BODY, mode="explain"))
    )
    assert "one or two short sentences" in messages[0]["content"]
    assert max_tokens == EXPLAIN_TOKENS


async def test_fix_refuses_bad_input_and_follows_the_server_policy(jp_fetch, codestral):
    for bad in (
        dict(FIX_BODY, cell=9),
        {k: v for k, v in FIX_BODY.items() if k != "error"},
        dict(FIX_BODY, error={"ename": 3, "evalue": ""}),
        dict(FIX_BODY, mode="rewrite"),
    ):
        with pytest.raises(HTTPClientError) as info:
            await fix(jp_fetch, bad)
        assert info.value.code == 400
        assert json.loads(info.value.response.body)["error"]["kind"] == "bad_request"
    codestral.settings.enabled = False
    with pytest.raises(HTTPClientError) as info:
        await fix(jp_fetch, FIX_BODY)
    assert info.value.code == 403
    assert json.loads(info.value.response.body)["error"]["kind"] == "disabled"


PRICING = '''
def net_price(gross: float, vat_rate: float = 0.2, *, rounding: int = 2) -> float:
    """The price without VAT."""
    return round(gross / (1 + vat_rate), rounding)
'''
PROJECT_CELLS = [
    {"cell_type": "code", "source": "from pricing import net_price"},
    {"cell_type": "code", "source": "price = net_price("},
]
PROJECT_BODY = {"cells": PROJECT_CELLS, "cell": 1, "cursor": 18, "max_tokens": 4,
                "path": "shop/prices.ipynb"}  # fmt: skip


async def test_completion_carries_the_projects_signatures(jp_fetch, codestral, jp_root_dir):
    (jp_root_dir / "shop").mkdir()
    (jp_root_dir / "shop" / "pricing.py").write_text(PRICING)
    got = await complete(jp_fetch, PROJECT_BODY)
    assert got[0]["definitions"] == 1 and got[-1]["type"] == "done"
    prefix = codestral.prompts.fim_context(codestral_body(PROJECT_BODY)).prefix
    assert prefix.startswith("# From the project's own files:\n# shop/pricing.py:\n")
    assert "vat_rate: float = 0.2, *, rounding: int = 2) -> float:" in prefix
    # The user's setting, and the server's, turn it off.
    off = await complete(jp_fetch, dict(PROJECT_BODY, project=False))
    assert off[0]["definitions"] == 0
    codestral.settings.project_context = False
    assert (await complete(jp_fetch, PROJECT_BODY))[0]["definitions"] == 0


async def test_the_fix_sees_the_signature_a_wrong_keyword_missed(codestral, jp_root_dir):
    from jupyter_codestral.lab.wire import FixRequest

    (jp_root_dir / "shop").mkdir()
    (jp_root_dir / "shop" / "pricing.py").write_text(PRICING)
    failed = "price = net_price(120, vat=0.1)"
    error = {"ename": "TypeError",
             "evalue": "net_price() got an unexpected keyword argument 'vat'",
             "traceback": [f"----> 1 {failed}", "TypeError: net_price() got an unexpected "
                           "keyword argument 'vat'"]}  # fmt: skip
    body = {"cells": [PROJECT_CELLS[0], {"cell_type": "code", "source": failed}], "cell": 1,
            "error": error, "path": "shop/prices.ipynb"}  # fmt: skip
    messages, _ = codestral.prompts.fix_request(FixRequest.model_validate(body))
    assert "# def net_price(gross: float, vat_rate: float = 0.2" in messages[1]["content"]


async def test_recent_code_follows_the_definitions_without_repeats(codestral, jp_root_dir):
    (jp_root_dir / "shop").mkdir()
    (jp_root_dir / "shop" / "pricing.py").write_text(PRICING)
    recent = [
        {"path": "other.ipynb", "text": "discount = 0.1\nlabel = 'sale'"},
        {"path": "shop/prices.ipynb", "text": "anything_here = 1"},  # this document
        {"path": "third.py", "text": "from pricing import net_price"},  # already in it
        {"path": "fourth.ipynb", "text": "price = net_price("},  # the cell typed in: kept
    ]
    prefix = codestral.prompts.fim_context(codestral_body(dict(PROJECT_BODY, recent=recent))).prefix
    header = prefix[: prefix.index("from pricing import net_price")]
    assert header.index("# def net_price(") < header.index("# other.ipynb:\n# discount = 0.1\n")
    assert "anything_here" not in prefix and "third.py" not in prefix
    assert "# fourth.ipynb:\n# price = net_price(\n" in header


async def test_typing_with_the_project_header_prefills_only_the_typed_tokens(jp_fetch, jp_root_dir):
    (jp_root_dir / "shop").mkdir()
    (jp_root_dir / "shop" / "pricing.py").write_text(PRICING)
    focus = {"focus": ["price"], "recent": [{"path": "o.ipynb", "text": "rate = 0.1"}]}
    first = await complete(jp_fetch, PROJECT_BODY | focus)
    assert first[0]["definitions"] == 2
    for typed in ("1", "12", "120"):  # the cell's text changes, the header does not
        cells = [PROJECT_CELLS[0], {"cell_type": "code", "source": "price = net_price(" + typed}]
        body = PROJECT_BODY | focus | {"cells": cells, "cursor": 18 + len(typed)}
        usage = (await complete(jp_fetch, body))[-1]["usage"]
        assert usage["cached_prompt_tokens"] >= usage["prompt_tokens"] - 3
