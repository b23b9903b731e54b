"""How a fix is asked for and cleaned, without a model: the traceback trimmed to what matters,
fences dropped from a streamed answer however it is split."""

from __future__ import annotations

import pytest

from jupyter_codestral.fix import ProposalFilter, clean_proposal, diff, trim_traceback

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
    assert cleaner.feed("import math\nprint(ma") == "import math\nprint(ma"
    assert cleaner.feed("th.pi)\n``") == "th.pi)\n"  # may become a closing fence: held
    assert cleaner.feed("`\nprose") == "" and cleaner.closed


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
