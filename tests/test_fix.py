"""How a fix is asked for and cleaned, without a model: the traceback trimmed to what matters,
fences dropped from a streamed answer however it is split."""

from __future__ import annotations

import pytest

from jupyter_codestral.context.fix import (
    ProposalFilter,
    clean_proposal,
    diff,
    from_error_output,
    trim_traceback,
)

from .test_lab_handlers import ERROR_OUTPUT


def streamed(text: str, step: int) -> str:
    cleaner = ProposalFilter()
    shown = "".join(cleaner.feed(text[i : i + step]) for i in range(0, len(text), step))
    return shown + cleaner.finish()


@pytest.mark.parametrize(
    ("answer", "cell"),
    [
        ("```python\nx = 1\ny = 2\n```\nThis defines y.", "x = 1\ny = 2\n"),
        ("```\nx = 1\n```", "x = 1\n"),
        ("x = 1\ny = 2", "x = 1\ny = 2"),
        ("s = `x`\nt = '```'\n", "s = `x`\nt = '```'\n"),
    ],
)
def test_fences_are_dropped_however_the_answer_is_split(answer, cell):
    for step in (1, 2, 3, 7, len(answer)):
        assert streamed(answer, step) == cell, step


def test_text_that_cannot_be_a_fence_shows_at_once():
    assert ProposalFilter().feed("imp") == "imp"  # a first line that is no fence
    assert ProposalFilter().feed("``") == ""  # one that may be
    cleaner = ProposalFilter()
    assert cleaner.feed("\n```python\nimport math\nprint(ma") == "import math\nprint(ma"
    assert cleaner.feed("th.pi)\n``") == "th.pi)\n"  # may become the closing fence: held
    assert cleaner.feed("`\nprose") == "" and cleaner.closed
    unfenced = ProposalFilter()  # without an opening fence, a bare ``` line is the cell's own
    cell = 's = """\n```\n"""\n'
    assert unfenced.feed(cell) + unfenced.finish() == cell


def test_clean_proposal_and_diff():
    assert clean_proposal("```python\nx = 1\n```\n") == "x = 1\n"
    assert clean_proposal("x = 1") == "x = 1\n"
    assert diff("x = 1\n", "x = 1\n") == "(no change proposed)"


def test_the_traceback_keeps_the_users_frames_and_the_error_once():
    library_frame = (
        "File \x1b[32m/usr/lib/python3/site-packages/pandas/core/frame.py:4102\x1b[39m, in "
        "\x1b[36mDataFrame.__getitem__\x1b[39m\n   4100 if self.columns.nlevels > 1:\n"
    )
    lines = [*ERROR_OUTPUT["traceback"][:-1], library_frame, ERROR_OUTPUT["traceback"][-1]]
    error = "NameError: name 'diameter_cm' is not defined"
    trimmed = trim_traceback(lines, error)
    assert trimmed.splitlines() == [
        "Cell In[4], line 1",
        "----> 1 ratio = radius_cm / diameter_cm",
        "File /usr/lib/python3/site-packages/pandas/core/frame.py:4102, in DataFrame.__getitem__",
        "   4100 if self.columns.nlevels > 1:",
        error,
    ]
    many = [f"Cell In[{i}], line 1\n----> 1 f()\n" for i in range(40)]
    assert len(trim_traceback(many, error).splitlines()) == 31  # capped, the error kept
    assert trim_traceback([], "KeyError: 'x'") == "KeyError: 'x'"  # another kernel's output


@pytest.fixture(scope="module")
def error_outputs() -> dict[str, dict]:
    """Error outputs as a real IPython kernel sends them."""
    from jupyter_client.manager import start_new_kernel

    cells = {
        "syntax": "x = (1,\ny = 2 +",
        "chained": "d = {}\ntry:\n    d['k']\nexcept KeyError as e:\n"
        "    raise ValueError('bad') from e",
        "bare": "assert 1 == 2",
    }
    km, kc = start_new_kernel(kernel_name="python3")
    outputs = {}
    try:
        for name, code in cells.items():
            kc.execute(code)
            while True:
                message = kc.get_iopub_msg(timeout=30)
                if message["msg_type"] == "error":
                    outputs[name] = message["content"]
                state = message["content"].get("execution_state")
                if message["msg_type"] == "status" and state == "idle" and name in outputs:
                    break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return outputs


def trimmed(output: dict) -> list[str]:
    failed = from_error_output("cell", output["ename"], output["evalue"], output["traceback"])
    return failed.traceback.splitlines()


def test_real_tracebacks_keep_each_error_once(error_outputs):
    syntax = trimmed(error_outputs["syntax"])
    assert syntax[-1] == "SyntaxError: '(' was never closed"  # no temporary file name
    assert sum("SyntaxError" in line for line in syntax) == 1
    assert any(line.strip() == "x = (1," for line in syntax)  # the line, with its caret
    chained = trimmed(error_outputs["chained"])
    assert "KeyError: 'k'" in chained  # the cause...
    assert any(line.startswith("The above exception was the direct cause") for line in chained)
    assert chained[-1] == "ValueError: bad" and chained.count("ValueError: bad") == 1
    bare = trimmed(error_outputs["bare"])
    assert bare[-1] == "AssertionError" and bare.count("AssertionError") == 1
    assert "----> 1 assert 1 == 2" in bare
