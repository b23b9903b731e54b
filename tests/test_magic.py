"""%%codestral in an InteractiveShell (in-process engine) and in real kernels (shared server)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys

import pandas as pd
import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from jupyter_client.manager import start_new_kernel

from jupyter_codestral.context.fix import EXPLAIN_TOKENS
from jupyter_codestral.context.teaching import HINTS_CHAT_MAX_TOKENS, HINTS_SYSTEM

from .helpers import TOKEN, start_server
from .helpers import run_in_kernel as run


@pytest.fixture(scope="module")
def shell(models):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_codestral")
    ip.run_line_magic("config", f"Codestral.model = {str(models['mlx'])!r}")
    ip.run_line_magic("config", "Codestral.engine = 'in-process'")
    ip.run_line_magic("config", "Codestral.output = 'display'")
    ip.display_formatter.active_types.append("text/markdown")
    yield ip
    ip.run_line_magic("codestral", "stop")


@pytest.fixture
def captured(shell):
    shell.display_pub = CapturingDisplayPublisher()
    return shell.display_pub.outputs


@pytest.fixture
def sent(shell, monkeypatch):
    """The prompts the real engine receives (a spy around Engine.fim / Engine.chat)."""
    shell.run_line_magic("codestral", "start")
    engine = shell.magics_manager.registry["Codestral"].link.target.engine
    calls = []
    for name in ("fim", "chat"):
        real = getattr(engine, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(engine, name, spy)
    return calls


def test_config_traitlets_reach_the_magic(shell):
    shell.run_line_magic("config", "Codestral.max_tokens = 7")
    assert shell.magics_manager.registry["Codestral"].max_tokens == 7
    shell.run_line_magic("config", "Codestral.max_tokens = 512")


def test_answer_streams_with_progressive_updates(shell, captured):
    # A fast backend finishes the tiny model's tokens within a few default 0.25 s intervals.
    shell.run_line_magic("config", "Codestral.update_interval = 0.05")
    try:
        shell.run_cell_magic(
            "codestral", "--max-tokens 800 -o answer", "Explain list comprehensions."
        )
    finally:
        shell.run_line_magic("config", "Codestral.update_interval = 0.25")
    updates = [o for o in captured if o["update"]]
    assert len(updates) >= 3
    final = captured[-1]["data"]["text/markdown"]
    assert final.startswith(shell.user_ns["answer"])
    assert len(shell.user_ns["answer"]) > 0


def test_the_waiting_line_says_what_the_request_waits_behind(shell, captured):
    shell.run_line_magic("codestral", "start")
    engine = shell.magics_manager.registry["Codestral"].link.target.engine
    busy = engine.fim("while True:\n", min_tokens=2000, max_tokens=2000)  # running
    try:
        next(iter(busy))
        shell.run_cell_magic("codestral", "--max-tokens 2", "hi")
    finally:
        busy.cancel()
    shown = [o["data"]["text/markdown"] for o in captured]
    assert shown[0] == "*waiting for Codestral…*"
    assert shown[1] == "*waiting for Codestral… (1 request ahead)*"


def test_insert_prompt_has_history_and_the_dataframe_header(shell, sent):
    shell.user_ns["sales"] = pd.DataFrame({"amount": [1.5, 2.0], "region": ["n", "s"]})
    shell.run_cell("monthly = 12\nrate = monthly * 2", store_history=True)
    shell.run_cell_magic(
        "codestral", "--insert --max-tokens 5 -o code", "total amount per {monthly} in sales"
    )
    name, (prompt, suffix), _ = sent[-1]
    assert name == "fim" and suffix == ""
    assert "monthly = 12\nrate = monthly * 2\n" in prompt
    assert "# sales: pandas.DataFrame, 2 rows x 2 columns: 'amount' (float64), 'region' (" in prompt
    assert prompt.endswith("# total amount per 12 in sales\n")  # {monthly} interpolated
    assert shell.rl_next_input == shell.user_ns["code"]


def test_the_magic_builds_its_prompt_as_the_lab_does(shell, sent):
    """One context builder: the header first, then the newest cells within history_chars
    (counted in characters), the older ones noted as not shown; the cell itself whole."""
    shell.user_ns["prices"] = [1.0, 2.0]
    for i in range(100):
        shell.run_cell(f"step_{i} = {i}  # " + "x" * 40, store_history=True)
    long_tail = "\n".join(f"print({i})" for i in range(2000))
    shell.run_line_magic("config", "Codestral.history_chars = 400")
    try:
        shell.run_cell_magic("codestral", "--insert --max-tokens 2", "average of prices")
        _, (prompt, suffix), _ = sent[-1]
        shell.run_cell_magic("codestral", "--fill --max-tokens 2", f"x = <FILL>\n{long_tail}")
        _, (_, fill_suffix), _ = sent[-1]
        shell.run_line_magic("config", "Codestral.history_chars = 0")
        shell.run_cell_magic("codestral", "--insert --max-tokens 2", "average of prices")
        _, (private, _), _ = sent[-1]
    finally:
        shell.run_line_magic("config", "Codestral.history_chars = 6000")
    header = "# Live objects in the kernel:\n# prices: list of 2 items\n\n"
    assert prompt.startswith(header) and prompt.endswith("# average of prices\n")
    assert "step_99 = 99" in prompt and "step_0 = 0 " not in prompt
    assert re.search(r"# \(\d+ earlier cells not shown\)", prompt)
    assert len(prompt) - len(header) - len("# average of prices\n") <= 400
    assert suffix == "" and fill_suffix == "\n" + long_tail  # the user's code is not cut
    assert private == header + "# average of prices\n"  # history_chars = 0: no earlier cell


def test_fill_sends_code_before_and_after_the_marker(shell, sent):
    cell = "def area(r):\n    return <FILL>\n\nprint(area(2))\n"
    shell.run_cell_magic("codestral", "--fill --max-tokens 4 -o filled --no-context", cell)
    _, (prompt, suffix), kwargs = sent[-1]
    assert prompt == "def area(r):\n    return "
    assert suffix == "\n\nprint(area(2))\n"
    assert kwargs["max_tokens"] == 4
    filled = shell.user_ns["filled"]
    assert filled.startswith("def area(r):\n    return ") and filled.endswith(
        "\n\nprint(area(2))\n"
    )


def test_default_mode_is_chat_with_the_variables_header(shell, sent):
    shell.user_ns["grid"] = __import__("numpy").zeros((3, 4), dtype="float32")
    shell.run_cell_magic("codestral", "--max-tokens 3", "How do I normalise grid?")
    name, (messages,), _ = sent[-1]
    assert name == "chat"
    assert "# grid: numpy.ndarray, shape (3, 4), dtype float32" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "How do I normalise grid?"}


@pytest.mark.parametrize(
    "line,cell,fragment",
    [
        ("--max-tokens many", "x", "invalid int value"),
        ("--insert --replace", "x", "one of --insert and --replace"),
        ("--fill", "x = 1", "exactly one <FILL>"),
        ("", "   ", "The cell is empty"),
        ("--max-tokens 0", "x", "at least 1"),
        ("--temperature 9", "x", "temperature"),
        ("--bogus", "x", r"unrecognized arguments: --bogus\. Valid options: --insert, --replace"),
        ("--inserts", "x", r"Did you mean --insert \(for --inserts\)\?"),
    ],
)
def test_bad_options_are_usage_errors(shell, line, cell, fragment):
    magics = shell.magics_manager.registry["Codestral"]
    shell.run_line_magic("codestral", "start")
    loaded = magics.link.target
    with pytest.raises(UsageError, match=fragment):
        shell.run_cell_magic("codestral", line, cell)
    shell.run_cell_magic("codestral", "--max-tokens 2 -o ok", "still working?")
    assert isinstance(shell.user_ns["ok"], str)
    assert magics.link.target is loaded  # a bad request keeps the loaded engine


def test_pull_mistakes_are_usage_errors(shell, capsys, monkeypatch, tmp_path):
    with pytest.raises(UsageError, match=r"unrecognized arguments: --bogus\nusage: %codestral"):
        shell.run_line_magic("codestral", "pull --bogus")
    shell.run_line_magic("codestral", "pull --help")  # help, not an error
    assert "--accept-license" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"invalid choice: .3bit.(.|\n)*usage: %codestral pull"):
        shell.run_line_magic("codestral", "pull --quant 3bit")
    # The hub's own errors too: here the licence, never accepted and not answered.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=r"License \(MNPL\) was not accepted"):
        shell.run_line_magic("codestral", "pull --backend torch --quant 4bit")
    assert "held as int4 at load: serve with --quantize int4" in capsys.readouterr().out


def test_where_the_model_runs_and_its_errors(monkeypatch, tmp_path, capsys):
    for name in ("CODESTRAL_MODEL", "MISTRAL_API_KEY", "CODESTRAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing pulled
    from jupyter_codestral.magic.magics import Codestral

    magics = Codestral(InteractiveShell.instance())
    magics.model, magics.engine = "", "in-process"  # not what the shared shell was configured with
    assert "unloaded — starts on the next request" in magics.link.status()
    # No model anywhere: the demo model, said loudly (as serve, the demo and JupyterLab do).
    magics.link.connect()
    assert "tiny-mlx-v1" in magics.link.status()
    assert "demo model (random weights)" in magics.link.status()
    assert "`%codestral pull`" in magics.link.status()
    assert "tiny demo model, whose output is gibberish" in capsys.readouterr().out
    magics.engine = "remote"  # a changed setting takes effect on the next request
    magics.url = "http://127.0.0.1:9"  # no key needed to try: a server without auth needs none
    with pytest.raises(UsageError, match="Cannot reach"):
        magics.codestral("", "hello")
    assert magics.link.made_for.remote


def test_line_magic_help_and_unknown_command(shell, capsys):
    shell.run_line_magic("codestral", "")
    assert "%%codestral [--insert | --replace | --fill]" in capsys.readouterr().out
    with pytest.raises(UsageError, match="Unknown command"):
        shell.run_line_magic("codestral", "frobnicate")


# Real kernels, talking to a real shared engine server.


@pytest.fixture(scope="module")
def kernel_server(models, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("kernel-runtime")
    server = start_server(models["mlx"], runtime, "--token", TOKEN)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def kernel_env(models, kernel_server):
    runtime = str(kernel_server.runtime)
    return {**os.environ, "JUPYTER_RUNTIME_DIR": runtime, "CODESTRAL_MODEL": str(models["mlx"])}


@pytest.fixture(scope="module")
def kernel(kernel_env):
    km, kc = start_new_kernel(kernel_name="python3", env=kernel_env)
    run(kc, "%load_ext jupyter_codestral")
    run(kc, "%config Codestral.update_interval = 0.05")  # several updates even on a fast backend
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_kernel_streams_progressive_display_updates(kernel):
    _, kc = kernel
    reply, messages = run(kc, "%%codestral --max-tokens 400\nExplain Python decorators.")
    assert reply["status"] == "ok"
    kinds = [m["msg_type"] for m in messages]
    assert kinds.count("display_data") == 1
    assert kinds.count("update_display_data") >= 3
    shown = [m["content"]["data"]["text/markdown"] for m in messages if "display" in m["msg_type"]]
    assert shown[0] == "*waiting for Codestral…*"  # at once, before the first token
    assert "waiting" not in shown[1] and shown[1].strip()


@pytest.mark.parametrize("flag,replace", [("--insert", False), ("--replace", True)])
def test_kernel_insert_and_replace_payloads(kernel, flag, replace):
    _, kc = kernel
    reply, _ = run(kc, f"%%codestral {flag} --max-tokens 6 -o generated\nload the csv file")
    payload = [p for p in reply["payload"] if p["source"] == "set_next_input"]
    assert len(payload) == 1 and payload[0]["replace"] is replace
    check, _ = run(kc, f"assert generated == {payload[0]['text']!r}")
    assert check["status"] == "ok"


def test_kernel_interrupt_cancels_and_the_next_call_works(kernel, kernel_env):
    km, kc = kernel
    msg_id = kc.execute("%%codestral --max-tokens 30000 -o partial\nWrite a very long essay.")
    while True:  # wait until text is streaming in
        msg = kc.get_iopub_msg(timeout=60)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "update_display_data"
        ):
            break
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=60)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    with pytest.raises(queue.Empty):  # drain: nothing more arrives for the interrupted cell
        while True:
            msg = kc.get_iopub_msg(timeout=1)
            assert msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] in (
                "status",
                "error",
                "update_display_data",
            )
    status, _ = run(kc, "%codestral status")
    assert status["status"] == "ok"
    again, _ = run(kc, "%%codestral --max-tokens 3 -o after\nhello")
    assert again["status"] == "ok"
    partial, _ = run(kc, "assert 0 < len(partial)")
    assert partial["status"] == "ok"  # what was shown before the interrupt is kept


def test_kernel_replies_are_matched_to_their_requests(kernel):
    """A reply nobody read stays on the shell channel: on a busy machine `start_new_kernel`
    leaves an extra kernel_info_reply there (it asks again after 1 s without an answer). The
    next cell must get its own reply, not that one (issue 24: the vLLM magic test read the
    previous cell's reply, without the --insert payload, and every later test was one off)."""
    _, kc = kernel
    kc.kernel_info()  # its reply is never read here
    reply, _ = run(kc, "%%codestral --insert --max-tokens 2 -o inserted\nx")
    assert [p["source"] for p in reply.get("payload", [])] == ["set_next_input"], reply


def test_kernel_stays_usable_after_a_usage_error(kernel):
    _, kc = kernel
    reply, _ = run(kc, "%%codestral --fill\nno marker here")
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    ok, _ = run(kc, "1 + 1")
    assert ok["status"] == "ok"


def test_load_ext_is_cheap(tmp_path):
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'jupyter_codestral')\n"
        "heavy = ('mlx', 'mlx_lm', 'torch', 'mistral_common')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # no engine was started


def test_terminal_output_prints_once(shell, captured, capsys):
    shell.run_line_magic("config", "Codestral.output = 'print'")
    try:
        shell.run_cell_magic("codestral", "--max-tokens 40 -o printed", "Say something.")
    finally:
        shell.run_line_magic("config", "Codestral.output = 'display'")
    out = capsys.readouterr().out
    assert out.count(shell.user_ns["printed"]) == 1  # streamed once, never re-printed
    assert captured == []  # no display updates in a terminal


def test_kernel_settings_take_effect_on_the_next_request(kernel, kernel_server):
    """A remote server, a wrong key, then the right one: no `%codestral stop` in between."""
    _, kc = kernel
    run(kc, "%config Codestral.engine = 'remote'")
    run(kc, f"%config Codestral.url = {kernel_server.url!r}")
    run(kc, "%config Codestral.api_key = 'wrong-key'")
    try:
        refused, _ = run(kc, "%%codestral --max-tokens 2\nhi")
        assert refused["status"] == "error" and refused["ename"] == "UsageError"
        assert "api_key" in refused["evalue"], refused["evalue"]
        run(kc, f"%config Codestral.api_key = {TOKEN!r}")
        answered, _ = run(kc, "%%codestral --max-tokens 2 -o remote_answer\nhi")
        assert answered["status"] == "ok", answered
        _, messages = run(kc, "%codestral status")
        printed = "".join(m["content"].get("text", "") for m in messages)
        assert f"remote server at {kernel_server.url} (mistral protocol)" in printed
        assert "state ready" in printed and "first token after" in printed
    finally:
        run(kc, "%config Codestral.engine = 'shared'")


def test_a_shared_engine_that_exited_when_idle_starts_again(models, monkeypatch, tmp_path):
    from jupyter_codestral.client.engine_client import stop_local_server
    from jupyter_codestral.magic.magics import Codestral

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    magics = Codestral(InteractiveShell.instance())
    magics.engine, magics.model, magics.idle_timeout = "shared", str(models["mlx"]), 0
    try:
        magics.codestral("--max-tokens 2 -o first", "hi")
        first = magics.link.target.client.url
        stop_local_server()  # as an idle engine exits
        assert "unloaded" in magics.link.status()
        magics.codestral("--max-tokens 2 -o second", "hi")  # no error: started again
        assert magics.link.target.client.url != first
    finally:
        magics.link.drop()
        stop_local_server()


def test_fix_proposes_a_corrected_cell_as_a_diff(shell, sent, captured):
    magics = shell.magics_manager.registry["Codestral"]
    magics.failures.last = None
    with pytest.raises(UsageError, match="No cell has failed"):
        shell.run_line_magic("codestral", "fix")
    shell.user_ns["prices"] = pd.DataFrame({"net": [1.0, 2.0]})
    shell.run_cell("total = prices['net'].sum() * undefined_rate")  # raises NameError
    shell.run_line_magic("config", "Codestral.max_tokens = 8")
    try:
        shell.run_line_magic("codestral", "fix")
        name, (messages,), _ = sent[-1]
        assert name == "chat"
        asked = messages[-1]["content"]
        assert "total = prices['net'].sum() * undefined_rate" in asked
        assert "NameError: name 'undefined_rate' is not defined" in asked
        assert "prices: pandas.DataFrame, 2 rows x 1 columns: 'net' (float64)" in asked
        assert "no Markdown fences" in messages[0]["content"]
        shown = captured[-1]["data"]["text/markdown"]
        assert shown.startswith("```diff\n--- failed cell\n+++ proposed fix")
        assert "-total = prices['net'].sum() * undefined_rate" in shown
        shell.run_line_magic("codestral", "fix --replace")
        assert shell.rl_next_input.endswith("\n") and shell.rl_next_input.strip()
    finally:
        shell.run_line_magic("config", "Codestral.max_tokens = 512")
        shell.run_line_magic("config", "Codestral.output = 'display'")


PRICING = '''
def net_price(gross: float, vat_rate: float = 0.2, *, rounding: int = 2) -> float:
    """The price without VAT."""
    return round(gross / (1 + vat_rate), rounding)
'''


def test_the_magic_and_the_fix_carry_the_projects_signatures(
    shell, sent, captured, tmp_path, monkeypatch
):
    """A project package put on sys.path at run time: the magic's prompts show its function's
    real signature (read from the file, never imported), and so does the fix of a TypeError
    from a wrong keyword; nothing outside the project's root is read."""
    project = tmp_path / "project"
    (project / "src" / "magicshop").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'shop'\n")
    (project / "src" / "magicshop" / "__init__.py").write_text("")
    (project / "src" / "magicshop" / "pricing.py").write_text(PRICING)
    (project / "notebooks").mkdir()
    monkeypatch.chdir(project / "notebooks")
    shell.run_cell(
        f"import sys\nsys.path.insert(0, {str(project / 'src')!r})\n"
        "from magicshop.pricing import net_price"
    )
    signature = "# def net_price(gross: float, vat_rate: float = 0.2, *, rounding: int = 2)"

    shell.run_cell_magic("codestral", "--insert --max-tokens 2", "net_price of 120 at 10 %")
    name, (prompt, _), _ = sent[-1]
    assert name == "fim" and signature in prompt and "# src/magicshop/pricing.py:" in prompt
    shell.run_cell_magic("codestral", "--max-tokens 2", "How do I call net_price?")
    assert signature in sent[-1][1][0][0]["content"]

    shell.run_cell("price = net_price(120, vat=0.1)")  # TypeError: unexpected keyword
    shell.run_line_magic("config", "Codestral.max_tokens = 4")
    try:
        shell.run_line_magic("codestral", "fix")
    finally:
        shell.run_line_magic("config", "Codestral.max_tokens = 512")
    asked = sent[-1][1][0][-1]["content"]
    assert "unexpected keyword argument 'vat'" in asked and signature in asked

    shell.run_line_magic("config", "Codestral.project_context = False")
    try:
        shell.run_cell_magic("codestral", "--insert --max-tokens 2", "net_price of 120")
    finally:
        shell.run_line_magic("config", "Codestral.project_context = True")
    assert signature not in sent[-1][1][0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the project's files are outside this kernel's root
    shell.run_cell_magic("codestral", "--insert --max-tokens 2", "net_price of 120")
    assert signature not in sent[-1][1][0]


def test_kernel_fix_replace_puts_the_fixed_code_in_the_cell(kernel):
    _, kc = kernel
    failed, _ = run(kc, "value = missing_name + 1")
    assert failed["status"] == "error"
    run(kc, "%config Codestral.max_tokens = 6")
    try:
        reply, messages = run(kc, "%codestral fix --replace")
        assert reply["status"] == "ok", reply
        payload = [p for p in reply["payload"] if p["source"] == "set_next_input"]
        assert len(payload) == 1 and payload[0]["replace"] is True
        shown = [
            m["content"]["data"]["text/markdown"]
            for m in messages
            if m["msg_type"] == "display_data"
        ]
        assert any(s.startswith("```diff\n--- failed cell") for s in shown), shown
    finally:
        run(kc, "%config Codestral.max_tokens = 512")


def test_fix_in_terminal_ipython_prints_the_diff_and_fills_the_next_prompt(kernel_env):
    """A real `ipython` (the terminal shell), on the shared engine the kernels use."""
    script = "\n".join(
        [
            "%load_ext jupyter_codestral",
            "%codestral fix",  # nothing failed yet
            "%config Codestral.max_tokens = 8",
            "value = missing_name + 1",
            "%codestral fix",
            "%codestral fix --replace",
            "print('NEXT:' + repr(get_ipython().rl_next_input))",
        ]
    )
    ipython = [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner",
               "--colors=NoColor", "--HistoryManager.enabled=False"]  # fmt: skip
    out = subprocess.run(
        ipython,
        input=script + "\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=kernel_env,
        timeout=300,
    ).stdout
    assert "UsageError: No cell has failed in this kernel yet" in out
    assert out.count("--- failed cell\n+++ proposed fix\n") == 2, out
    assert "-value = missing_name + 1" in out and "```diff" not in out  # plain text
    next_input = out.split("NEXT:")[1].splitlines()[0]
    assert next_input not in ("None", "''") and next_input.endswith("\\n'"), out


def test_the_notebooks_teaching_metadata_reaches_the_magic(
    shell, sent, captured, tmp_path, monkeypatch
):
    """jupyter_server tells a kernel its notebook's path ($JPY_SESSION_NAME); the magic reads
    the notebook's saved `codestral` metadata: off refuses, hints explains without code."""
    import nbformat

    notebook = tmp_path / "exam.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))

    def save(metadata: dict) -> None:
        nb = nbformat.v4.new_notebook(metadata={"codestral": metadata})
        nbformat.write(nb, notebook)
        stamp = notebook.stat().st_mtime_ns + len(sent) * 10**9  # a new save, a new stamp
        os.utime(notebook, ns=(stamp, stamp))

    save({"enabled": False})
    asked = len(sent)
    with pytest.raises(UsageError, match="turned off in this notebook by its teacher"):
        shell.run_cell_magic("codestral", "--max-tokens 3", "What is a list?")
    shell.run_cell("1 / 0")
    with pytest.raises(UsageError, match="turned off in this notebook"):
        shell.run_line_magic("codestral", "fix")
    assert len(sent) == asked  # nothing reached the model

    save({"mode": "hints"})
    with pytest.raises(UsageError, match="hints mode: Codestral explains but writes no code"):
        shell.run_cell_magic("codestral", "--insert --max-tokens 3", "sort a list")
    shell.run_cell_magic("codestral", "--max-tokens 900", "How do I sort a list?")
    name, (messages,), kwargs = sent[-1]
    assert name == "chat" and messages[0]["content"].startswith(HINTS_SYSTEM)
    assert kwargs["max_tokens"] == HINTS_CHAT_MAX_TOKENS
    shell.run_line_magic("codestral", "fix")
    name, (messages,), kwargs = sent[-1]
    assert "one or two short sentences" in messages[0]["content"]  # explain, not fix
    assert kwargs["max_tokens"] == EXPLAIN_TOKENS
    assert "```diff" not in captured[-1]["data"].get("text/markdown", "")

    save({})  # the teacher's switch back
    shell.run_cell_magic("codestral", "--insert --max-tokens 2", "sort a list")
    assert sent[-1][0] == "fim"
