"""Prompt-lookup speculative decoding, on every backend: the same greedy tokens as decoding one
token at a time, the sampling rule that keeps the model's distribution, and stops, cancels,
min/max tokens and the prompt cache unchanged when a draft is cut short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import codestral_engine
from codestral_engine.core import generation
from codestral_engine.core.params import GenerationParams, sampling_distribution
from codestral_engine.core.speculative import (
    FIRST_DRAFT,
    MAX_DRAFT,
    PAUSE_AFTER,
    Acceptor,
    PromptLookup,
)

from .conftest import PREFILL_CHUNK, loaded
from .helpers import OracleDrafter, preempted

CODE = (
    "def mean(values):\n    return sum(values) / len(values)\n\n"
    "def spread(values):\n    low, high = min(values), max(values)\n    return high - low\n\n"
)


@pytest.fixture(scope="module")
def speculating(models: dict[str, Path], backend: str) -> codestral_engine.Engine:
    """Speculative decoding on, whatever the backend's default."""
    yield from loaded(models["mlx"], backend, speculative=True)


@pytest.fixture
def fresh(speculating: codestral_engine.Engine) -> codestral_engine.Engine:
    speculating.prompt_cache.clear()
    return speculating


@pytest.fixture(scope="module")
def plain(models: dict[str, Path], backend: str) -> codestral_engine.Engine:
    """The same model decoding one token per step: the reference."""
    yield from loaded(models["mlx"], backend, speculative=False)


@pytest.fixture(scope="module")
def echo_prompts(plain: codestral_engine.Engine) -> list[str]:
    """Prompts whose continuation the model already wrote once in them: the random model's own
    greedy text after a piece of code, then that piece again, so lookup drafts what follows."""
    prompts = []
    for head in (CODE, CODE[:60], "import math\nradius = 3\narea = math.pi * radius"):
        seen = plain.fim(head, "", max_tokens=48).result()
        text = plain.tokenizer.decode(list(seen.completion_token_ids))
        prompts.append(head + text + "\n\n" + head)
    return prompts


def tokens(engine, prompt: str, **options) -> tuple[tuple[int, ...], object]:
    done = engine.fim(prompt, "", **options).result()
    return done.completion_token_ids, done


def test_lookup_drafts_what_followed_the_latest_longest_match():
    lookup = PromptLookup([5, 6, 7, 8, 1, 2, 3, 4, 9, 5, 6, 7, 0, 5, 6])
    assert lookup.lookup(3) == [7, 0, 5]  # the latest "5 6", not the first
    lookup = PromptLookup([1, 2, 3, 4, 1, 2, 9, 9, 2, 3, 7, 3, 1, 2])
    assert lookup.lookup(2) == [9, 9]  # no earlier "3 1 2": the latest "1 2"
    lookup.extend([3])
    assert lookup.lookup(4) == [4, 1, 2, 9]  # "1 2 3" (first) beats the later "2 3"
    assert PromptLookup([1, 2, 3]).lookup(4) == []  # nothing repeats
    assert PromptLookup([1, 2, 1, 2]).propose(0) == []


def test_drafting_adapts_and_pauses_by_counts():
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2])
    assert len(lookup.propose(100)) == FIRST_DRAFT
    lookup.record(FIRST_DRAFT, FIRST_DRAFT)
    assert len(lookup.propose(100)) == min(MAX_DRAFT, FIRST_DRAFT + 1)  # all kept: longer
    assert len(lookup.propose(1)) == 1  # never past the tokens left
    lookup.record(MAX_DRAFT, 0)
    assert len(lookup.propose(100)) == 1  # a miss: one token at a time

    def misses(n: int) -> None:
        for _ in range(n):
            lookup.record(1, 0)

    misses(PAUSE_AFTER - 1)  # with the miss above: drafting pauses for one step...
    assert lookup.propose(100) == [] and lookup.propose(100) != []
    misses(PAUSE_AFTER)  # ...then two, then four: a request where lookup fails pays little
    assert [lookup.propose(100) for _ in range(2)] == [[], []] and lookup.propose(100)
    lookup.record(1, 1)  # a hit resets the pauses
    misses(PAUSE_AFTER)
    assert lookup.propose(100) == [] and lookup.propose(100)


def test_sampled_acceptance_keeps_the_models_distribution():
    """A deterministic draft kept with probability p(d), else a draw from p without d: the
    emitted tokens follow p exactly (checked empirically on a 6-token vocabulary)."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3, 6)).astype(np.float32) * 1.5
    params = GenerationParams(temperature=0.8, top_p=0.9, random_seed=7)
    eos = 5
    acceptor = Acceptor(params, eos)
    firsts, seconds = np.zeros(6), np.zeros(6)
    trials = 20_000
    for _ in range(trials):
        kept, token = acceptor.accept_sampled([2, 4], rows, index=0)
        emitted = [*[2, 4][:kept], token]
        firsts[emitted[0]] += 1
        if emitted[0] == 2 and len(emitted) > 1:
            seconds[emitted[1]] += 1
    p0 = sampling_distribution(rows[0], params, 0, eos)
    p1 = sampling_distribution(rows[1], params, 1, eos)
    assert np.abs(firsts / trials - p0).sum() / 2 < 0.02
    assert np.abs(seconds / seconds.sum() - p1).sum() / 2 < 0.03
    # min_tokens: end of sequence is never drawn before it, draft or not.
    strict = Acceptor(GenerationParams(temperature=1.0, min_tokens=3), eos)
    for _ in range(200):
        assert strict.accept_sampled([eos], rows, index=0)[0] == 0
        assert strict.accept_sampled([], rows, index=2)[1] != eos


def test_greedy_tokens_are_identical_with_and_without_speculation(
    speculating, plain, echo_prompts, backend
):
    engine = speculating
    accepted = 0
    for prompt in echo_prompts:
        want, _ = tokens(plain, prompt, max_tokens=40)
        got, done = tokens(engine, prompt, max_tokens=40)
        assert got == want, backend
        assert done.usage.draft_tokens >= done.usage.accepted_draft_tokens
        accepted += done.usage.accepted_draft_tokens
    assert accepted > 0  # the drafts were used: the speculative path ran
    # With the prompt cache warm, and with a suffix (FIM's own layout) too.
    again, _ = tokens(engine, echo_prompts[0], max_tokens=40)
    assert again == tokens(plain, echo_prompts[0], max_tokens=40)[0]
    fim = engine.fim(CODE, "\nprint(mean([1, 2]))\n" + CODE, max_tokens=30).result()
    ref = plain.fim(CODE, "\nprint(mean([1, 2]))\n" + CODE, max_tokens=30).result()
    assert fim.completion_token_ids == ref.completion_token_ids


def test_stops_and_limits_inside_a_draft_end_where_plain_decoding_ends(
    fresh, plain, echo_prompts, monkeypatch
):
    fresh_engine = fresh
    prompt = echo_prompts[0]
    want, _ = tokens(plain, prompt, max_tokens=40)
    text = plain.tokenizer.decode(list(want))
    for limit in (1, 2, 3, 5, 8, 13):  # cut anywhere, drafts or not
        assert tokens(fresh_engine, prompt, max_tokens=limit)[0] == want[:limit]
    # Stops at many places, with a drafter that is always right, so most fall inside a run of
    # accepted drafts: the text ends where plain decoding's does, and the cache kept holds
    # exactly the tokens taken (the next request reuses all of its prompt from it and goes on
    # as plain decoding does).
    ids = list(plain.fim(prompt, "", max_tokens=1).result().prompt_token_ids)
    oracle = OracleDrafter(ids, list(want))
    monkeypatch.setattr(generation, "PromptLookup", lambda context: oracle.restarted(context))
    for at in range(2, len(text) - 3, max(1, len(text) // 12)):
        stop = text[at : at + 2]
        fresh_engine.prompt_cache.clear()
        cut = fresh_engine.fim(prompt, "", max_tokens=40, stop=[stop]).result()
        ref = plain.fim(prompt, "", max_tokens=40, stop=[stop]).result()
        assert (cut.finish_reason, cut.completion_token_ids) == (
            ref.finish_reason,
            ref.completion_token_ids,
        )
        assert cut.usage.accepted_draft_tokens > 0
        again, done = tokens(fresh_engine, prompt, max_tokens=40)
        assert again == want
        assert done.usage.cached_prompt_tokens >= done.usage.prompt_tokens - 1, stop


def test_min_tokens_hold_off_the_end_inside_drafts(eos_model, backend):
    with codestral_engine.load(eos_model, backend, speculative=True) as eng:
        done = eng.fim("x = 1\nx = 1\nx = 1\nx = 1\n", "", max_tokens=20, min_tokens=6).result()
        with codestral_engine.load(eos_model, backend, speculative=False) as ref:
            want = ref.fim("x = 1\nx = 1\nx = 1\nx = 1\n", "", max_tokens=20, min_tokens=6)
            assert done.completion_token_ids == want.result().completion_token_ids
    assert len(done.completion_token_ids) == 6 and done.finish_reason == "stop"


def test_a_cancel_mid_draft_leaves_the_engine_serving(fresh, plain, echo_prompts):
    fresh_engine = fresh
    request = fresh_engine.fim(echo_prompts[1], "", max_tokens=400, min_tokens=400)
    for event in request:
        if getattr(event, "text", None):
            request.cancel()
            break
    assert request.result().finish_reason == "cancelled"
    want, _ = tokens(plain, echo_prompts[1], max_tokens=30)
    assert tokens(fresh_engine, echo_prompts[1], max_tokens=30)[0] == want


def test_seeded_sampling_reproduces_with_speculation(speculating, echo_prompts):
    engine = speculating
    options = {"max_tokens": 30, "temperature": 0.9, "random_seed": 11}
    first, _ = tokens(engine, echo_prompts[0], **options)
    second, _ = tokens(engine, echo_prompts[0], **options)
    assert first == second
    assert tokens(engine, echo_prompts[0], **{**options, "random_seed": 12})[0] != first


def test_on_by_default_where_it_was_measured_to_win(engine, backend, models):
    assert engine.speculative is (backend == "torch")  # float weights on a CPU, here
    if backend == "torch":  # int8 and int4 passes over a few rows cost too much to pay
        for quantize in ("int8", "int4"):
            with codestral_engine.load(models["hf"], "torch", quantize=quantize) as quantized:
                assert quantized.speculative is False


@pytest.fixture(scope="module")
def static_engines(models: dict[str, Path]):
    options = {"prefill_chunk": PREFILL_CHUNK, "dtype": "float32"}
    with (
        codestral_engine.load(models["hf"], "torch", static_decode="aot_eager", **options) as s,
        codestral_engine.load(models["hf"], "torch", static_decode="off", **options) as d,
    ):
        yield s, d


@pytest.fixture
def static_pair(static_engines):
    """The torch backend with the static-slot decode step compiled (aot_eager: the graph is
    checked whole, fullgraph, without inductor's compile time) and with the dynamic step;
    a test may switch speculation on either, and it is switched back after."""
    yield static_engines
    for engine in static_engines:
        engine.speculative = engine.backend.speculates


def test_the_static_compiled_decode_step_gives_the_dynamic_steps_tokens(static_pair):
    static, dynamic = static_pair
    assert static.backend.static_decode == "aot_eager" and dynamic.backend.static_decode is None
    prompt, suffix = CODE, "\nprint(mean([1, 2]))\n"
    for options in (
        {"max_tokens": 1},
        {"max_tokens": 7},
        {"max_tokens": 1100},  # the slot grows
        {"max_tokens": 40, "temperature": 0.8, "random_seed": 3},
    ):
        for spec in (False, True):
            static.speculative = dynamic.speculative = spec
            got = static.fim(prompt, suffix, **options).result()
            want = dynamic.fim(prompt, suffix, **options).result()
            assert got.completion_token_ids == want.completion_token_ids, (options, spec)
    # What was decoded in the slot went back to the prompt cache: the same prompt again
    # prefills one token, and a stop or a cancel mid-way leaves it consistent too.
    again = static.fim(prompt, suffix, max_tokens=7).result()
    assert again.usage.cached_prompt_tokens == again.usage.prompt_tokens - 1
    text = dynamic.tokenizer.decode(list(want.completion_token_ids))
    stop = text[10:12]
    cut = static.fim(prompt, suffix, max_tokens=40, stop=[stop]).result()
    assert (
        cut.completion_token_ids
        == dynamic.fim(prompt, suffix, max_tokens=40, stop=[stop]).result().completion_token_ids
    )
    request = static.fim(prompt, "", max_tokens=300)
    for event in request:
        if getattr(event, "text", None):
            request.cancel()
            break
    assert request.result().finish_reason == "cancelled"
    longer = static.fim(prompt + "x", suffix, max_tokens=12).result()
    assert (
        longer.completion_token_ids
        == dynamic.fim(prompt + "x", suffix, max_tokens=12).result().completion_token_ids
    )


def test_static_decode_is_for_cuda_by_default(models):
    with codestral_engine.load(models["hf"], "torch") as engine:  # this machine's CPU
        assert engine.backend.static_decode is None


@pytest.mark.parametrize("spec", [False, True])
def test_a_preempting_request_does_not_disturb_the_static_slot(static_pair, spec):
    """An interactive FIM runs between two steps of a chat, through the same slot: each gets
    the tokens it gets alone."""
    static, dynamic = static_pair
    static.speculative = dynamic.speculative = spec
    question = [{"role": "user", "content": "Write a function that adds two numbers."}]
    alone = dynamic.chat(question, max_tokens=200).result().completion_token_ids
    fim_alone = dynamic.fim(CODE, "\n", max_tokens=5).result().completion_token_ids
    static.prompt_cache.clear()
    final, fim_result, fim_first = preempted(static, question, (CODE, "\n"), 5, max_tokens=200)
    assert fim_first  # it ran between two of the chat's steps
    assert fim_result.completion_token_ids == fim_alone
    assert final.completion_token_ids == alone
