"""Prompt-cache reuse: only the new tail is prefilled, and results equal a cold run."""

from __future__ import annotations

import pytest

import codestral_engine

CELL_ABOVE = "import pandas as pd\n\ndf = pd.read_csv('sales.csv')\nsummary = df.describe()\n"
SUFFIX = "\n\nprint(total)\n"


@pytest.fixture
def prefill_counts(fresh_engine, monkeypatch):
    """How many tokens the backend was asked to prefill, per request (spies on the real call)."""
    counts: list[int] = []
    real = fresh_engine.backend.generate

    def counting(tokens, *args, **kwargs):
        counts.append(len(tokens))
        return real(tokens, *args, **kwargs)

    monkeypatch.setattr(fresh_engine.backend, "generate", counting)
    return counts


def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_typing_at_the_cursor_prefills_only_the_new_tokens(
    fresh_engine, prefill_counts, mlx_lm_greedy
):
    first = fresh_engine.fim(CELL_ABOVE + "total = df", SUFFIX, max_tokens=8).result()
    assert first.usage.cached_prompt_tokens == 0
    assert prefill_counts == [first.usage.prompt_tokens]

    typed = CELL_ABOVE + "total = df['amount'].sum("  # a few more characters at the cursor
    second = fresh_engine.fim(typed, SUFFIX, max_tokens=8).result()
    shared = common_prefix(first.prompt_token_ids, second.prompt_token_ids)
    new_tokens = second.usage.prompt_tokens - shared
    assert 1 <= new_tokens <= 8
    assert second.usage.cached_prompt_tokens == shared
    assert prefill_counts[-1] == new_tokens
    assert list(second.completion_token_ids) == mlx_lm_greedy(list(second.prompt_token_ids), 8)


def test_identical_request_prefills_one_token(fresh_engine, prefill_counts, mlx_lm_greedy):
    first = fresh_engine.fim(CELL_ABOVE, SUFFIX, max_tokens=4).result()
    again = fresh_engine.fim(CELL_ABOVE, SUFFIX, max_tokens=4).result()
    assert again.usage.cached_prompt_tokens == again.usage.prompt_tokens - 1
    assert prefill_counts[-1] == 1
    assert again.completion_token_ids == first.completion_token_ids


@pytest.mark.parametrize("keep", [0.75, 0.25])
def test_divergence_mid_prompt_reuses_exactly_the_common_prefix(
    fresh_engine, prefill_counts, mlx_lm_greedy, keep
):
    base = fresh_engine.tokenizer.encode_fim(CELL_ABOVE * 3)
    cut = int(len(base) * keep)
    diverged = base[:cut] + fresh_engine.tokenizer.encode_fim("x = 42\n" * 5)[3:]
    fresh_engine.submit(base, max_tokens=4).result()
    done = fresh_engine.submit(diverged, max_tokens=6).result()
    assert done.usage.cached_prompt_tokens == common_prefix(base, diverged) >= cut
    assert prefill_counts[-1] == len(diverged) - done.usage.cached_prompt_tokens
    assert list(done.completion_token_ids) == mlx_lm_greedy(diverged, 6)
    # An early divergence copies the prefix instead of trimming, so the first context survives.
    back = fresh_engine.submit(base, max_tokens=4).result()
    if keep < 0.5:
        assert back.usage.cached_prompt_tokens == len(base) - 1
    assert list(back.completion_token_ids) == mlx_lm_greedy(base, 4)


def test_two_cells_alternating_both_stay_cached(fresh_engine, prefill_counts):
    cell_a = ("a = load()\n" * 20, "\nplot(a)\n")
    cell_b = ("b = fit(a)\n" * 20, "\nreport(b)\n")
    for prompt in (cell_a, cell_b):
        fresh_engine.fim(*prompt, max_tokens=3).result()
    for prompt in (cell_a, cell_b):
        done = fresh_engine.fim(prompt[0] + "x", prompt[1], max_tokens=3).result()
        assert done.usage.prompt_tokens - done.usage.cached_prompt_tokens <= 3


def test_cache_is_bounded_in_entries(models, backend):
    prompts = [(f"v{i} = {i}\n" * 30, "") for i in range(3)]
    with codestral_engine.load(models["mlx"], backend, prompt_cache_entries=2) as eng:
        for prompt in prompts:
            eng.fim(*prompt, max_tokens=2).result()
        assert len(eng.prompt_cache) == 2
        oldest = eng.fim(*prompts[0], max_tokens=2).result()
        assert (
            oldest.usage.cached_prompt_tokens < 10
        )  # evicted: only "<s>[SUFFIX][PREFIX]…" matches
        newest = eng.fim(*prompts[2], max_tokens=2).result()
        assert newest.usage.cached_prompt_tokens == newest.usage.prompt_tokens - 1


def test_cache_is_bounded_in_bytes(models, backend):
    with codestral_engine.load(models["mlx"], backend) as probe:
        probe.fim("q = 1\n" * 30, max_tokens=2).result()
        one_entry = probe.prompt_cache.nbytes
    with codestral_engine.load(
        models["mlx"], backend, prompt_cache_bytes=int(one_entry * 1.5)
    ) as eng:
        eng.fim("q = 1\n" * 30, max_tokens=2).result()
        eng.fim("r = 2\n" * 30, max_tokens=2).result()
        assert len(eng.prompt_cache) == 1
        assert eng.prompt_cache.nbytes <= one_entry * 1.5
        again = eng.fim("q = 1\n" * 30, max_tokens=2).result()
        assert again.usage.cached_prompt_tokens < 10
