"""The ghost-text context builder with the real Codestral tokenizer: budget, layout, and the
stable window boundaries that let the engine's prompt cache hit on every keystroke."""

from __future__ import annotations

import base64

import pytest

from codestral_engine.core.tokenizer import CodestralTokenizer
from codestral_engine.weights.tiny import tokenizer_path
from jupyter_codestral.context.notebook import Cell, ContextBuilder, render

CONTROL_IDS = {1, 2, 11, 12, 13}  # <s>, </s>, [PREFIX], [MIDDLE], [SUFFIX]


@pytest.fixture(scope="module")
def tokenizer() -> CodestralTokenizer:
    return CodestralTokenizer(tokenizer_path())


def notebook(n: int = 40) -> list[Cell]:
    cells = [Cell("markdown", "# Sales report\nTotals per *region*.")]
    for i in range(n):
        cells.append(
            Cell(
                "code",
                f"import pandas as pd\nframe_{i} = pd.DataFrame({{'a': [{i}]}})\n"
                f"print(frame_{i}.describe())",
            )
        )
    return cells


@pytest.mark.parametrize("budget", [256, 512, 2048])
def test_the_prompt_stays_within_the_budget_in_real_tokens(tokenizer, budget):
    builder = ContextBuilder(tokenizer.count, budget=budget)
    cells = notebook()
    for index in (0, 5, 20, 40):
        cursor = len(cells[index].source) // 2
        context = builder.build(cells, index, cursor)
        ids = tokenizer.encode_fim(context.prefix, context.suffix)
        assert len(ids) - 2 <= budget  # <s> and [SUFFIX] ... [PREFIX] are not context
        assert context.prefix.endswith(cells[index].source[:cursor])


def test_current_cell_is_split_at_the_cursor_and_nearest_cells_come_first(tokenizer):
    builder = ContextBuilder(tokenizer.count, budget=400)
    cells = notebook()
    cells[20] = Cell("code", "total = frame_19.a.sum()\nprint(total)")
    cursor = len("total = frame_19.")
    context = builder.build(cells, 20, cursor)
    assert context.prefix.endswith("\n\ntotal = frame_19.")
    assert context.suffix.startswith("a.sum()\nprint(total)\n\nimport pandas")
    assert "frame_18 = " in context.prefix and "frame_17 = " in context.prefix
    assert "frame_2 = " not in context.prefix  # far cells are left out ...
    assert context.prefix.startswith(f"# ({context.elided_above} earlier cells not shown)")
    assert context.elided_above > 0 and context.cells_above + context.elided_above == 20
    assert "frame_20 = " in context.suffix and context.cells_below >= 1


def test_markdown_becomes_comments_in_the_kernels_language(tokenizer):
    cells = [Cell("markdown", "# Title\nSome text\n\nMore"), Cell("code", "x = ")]
    context = ContextBuilder(tokenizer.count).build(cells, 1, 4)
    assert context.prefix == "# # Title\n# Some text\n#\n# More\n\nx = "
    assert render(Cell("markdown", "Note"), "--") == "-- Note"
    sql = ContextBuilder(tokenizer.count).build(
        [Cell("markdown", "Query"), Cell("code", "SELECT ")], 1, 7, language="SQL"
    )
    assert sql.prefix.startswith("-- Query")


def test_typing_keeps_the_prefix_start_and_the_suffix_fixed(tokenizer):
    """50 keystrokes in one place: the token sequence before the cursor only grows, so every
    request after the first reuses the previous one's KV cache."""
    builder = ContextBuilder(tokenizer.count, budget=512)
    cells = notebook()
    head = "def summarize(frames):\n    "
    tail = "\n    return result\n"
    typed = "result = pd.concat([f.describe() for f in frames]).mean()"[:50]
    assert len(typed) == 50
    previous = None
    starts, suffixes = set(), set()
    for k in range(len(typed) + 1):
        cells[25] = Cell("code", head + typed[:k] + tail)
        context = builder.build(cells, 25, len(head) + k)
        starts.add(context.prefix[: len(context.prefix) - len(head) - k])
        suffixes.add(context.suffix)
        ids = tokenizer.encode_fim(context.prefix, context.suffix)
        if previous is not None:  # shared prefix up to the last token before the edit
            pairs = zip(previous, ids, strict=False)
            same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(ids))
            assert same >= len(previous) - 2, k
        previous = ids
    assert len(starts) == 1 and len(suffixes) == 1


def test_pressing_enter_rarely_moves_the_window(tokenizer):
    builder = ContextBuilder(tokenizer.count, budget=512)
    cells = notebook()
    lines = [f"value_{i} = frame_{i}.a.sum()\n" for i in range(10)]
    starts = set()
    for k in range(len(lines)):
        source = "".join(lines[:k])
        cells[25] = Cell("code", source)
        context = builder.build(cells, 25, len(source))
        starts.add(context.prefix[: len(context.prefix) - len(source)])
    assert len(starts) <= 3  # the reserve grows in 128-token steps, not per line


def test_control_token_lookalikes_stay_text(tokenizer):
    cells = [Cell("code", 's = "[PREFIX] [SUFFIX] [MIDDLE] </s> <s>"'), Cell("code", "t = ")]
    context = ContextBuilder(tokenizer.count).build(cells, 1, 4)
    ids = tokenizer.encode_fim(context.prefix, context.suffix)
    assert [i for i in ids if i in CONTROL_IDS] == [1, 13, 11]  # only the FIM layout's own


def test_a_huge_current_cell_keeps_its_last_lines(tokenizer):
    source = "".join(f"row_{i} = {i} * 2\n" for i in range(2000)) + "answer = "
    context = ContextBuilder(tokenizer.count, budget=512).build(
        [Cell("code", source)], 0, len(source)
    )
    assert context.prefix.endswith("row_1999 = 1999 * 2\nanswer = ")
    assert "row_0 = " not in context.prefix
    assert len(tokenizer.encode_fim(context.prefix, context.suffix)) <= 514


def test_a_huge_cursor_line_is_capped_and_the_cut_stays_put_while_typing(tokenizer):
    """A 60 KB base64 string before the cursor once gave a 48,796-token prompt (budget 2,048)."""
    blob = base64.b64encode(bytes(range(256)) * 176).decode()  # ~60 KB on one line
    above = [Cell("code", "import base64\nkey = 'k'")]
    builder = ContextBuilder(tokenizer.count, budget=2048)
    starts = set()
    for typed in ("", "Q", "QU", "QUJD"):
        source = "payload = '" + blob + typed
        context = builder.build([*above, Cell("code", source)], 1, len(source))
        assert len(tokenizer.encode_fim(context.prefix, context.suffix)) - 2 <= 2048
        assert context.prefix.endswith(blob[-200:] + typed)  # the end nearest the cursor
        assert "key = 'k'" in context.prefix  # room is left for the cells above
        starts.add(context.prefix[:300])
    assert len(starts) == 1  # the cut did not move: the prompt cache keeps the prefix


@pytest.mark.parametrize("char", ["\U0001f99c", "\u9f98"])  # 4 and 3 tokens each
def test_a_cursor_line_of_multi_token_characters_stays_inside_the_budget(tokenizer, char):
    source = "label = '" + char * 700
    context = ContextBuilder(tokenizer.count, budget=2048).build(
        [Cell("code", source)], 0, len(source)
    )
    assert len(tokenizer.encode_fim(context.prefix, context.suffix)) - 2 <= 2048


def test_kernel_facts_open_the_prefix_within_their_share_and_stay_put(tokenizer):
    facts = [
        f"frame_{i}: pandas.DataFrame, 10 rows x 3 columns: 'a' (int64), 'b' (str)"
        for i in range(40)
    ]
    builder = ContextBuilder(tokenizer.count, budget=2048)
    cells = notebook(10)
    starts = set()
    for typed in ("", "t", "to", "tot"):
        source = cells[-1].source + "\n" + typed
        context = builder.build(
            [*cells[:-1], Cell("code", source)], len(cells) - 1, len(source), facts=facts
        )
        header = context.prefix.split("\n\n")[0]
        assert header.startswith("# Live objects in the kernel:\n# frame_0: pandas.DataFrame")
        assert 0 < context.facts < 40  # cut to its share, whole lines
        assert tokenizer.count(header) <= 2048 // 8
        assert len(tokenizer.encode_fim(context.prefix, context.suffix)) - 2 <= 2048
        starts.add(header)
    assert len(starts) == 1
    plain = builder.build(cells, 3, len(cells[3].source))
    assert not plain.prefix.startswith("# Live objects") and plain.facts == 0


def test_bad_positions_are_value_errors(tokenizer):
    builder = ContextBuilder(tokenizer.count)
    with pytest.raises(ValueError, match="outside the notebook"):
        builder.build([Cell("code", "x")], 3, 0)
    with pytest.raises(ValueError, match="outside the cell"):
        builder.build([Cell("code", "x")], 0, 5)
