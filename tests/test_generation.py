"""Streaming, stop strings, min/max tokens, sampling, concurrency and bad input."""

from __future__ import annotations

import threading

import pytest

import codestral_engine
from codestral_engine import ContextLengthError, Finished, InvalidRequestError, TextDelta

from .conftest import PREFILL_CHUNK

PREFIX = "def greet(name):\n    "
SUFFIX = "\n\ngreet('Ada')\n"


def test_events_stream_text_then_one_final_event(fresh_engine):
    events = list(fresh_engine.fim(PREFIX, SUFFIX, max_tokens=12))
    deltas, final = events[:-1], events[-1]
    assert all(isinstance(e, TextDelta) for e in deltas)
    assert isinstance(final, Finished)
    assert final.finish_reason == "length"
    ids = [i for e in deltas for i in e.token_ids]
    assert ids == list(final.completion_token_ids)
    assert len(ids) == 12 == final.usage.completion_tokens
    assert "".join(e.text for e in deltas) == fresh_engine.tokenizer.decode(ids)
    usage = final.usage
    assert usage.prompt_tokens == len(final.prompt_token_ids)
    assert usage.time_to_first_token_s > 0
    assert usage.decode_tokens_per_s > 0
    assert usage.peak_memory_bytes > 0


def test_end_of_sequence_finishes_with_stop(eos_model, backend):
    with codestral_engine.load(eos_model, backend) as eng:
        done = eng.fim("x = 1", max_tokens=10).result()
    assert done.finish_reason == "stop"
    assert done.completion_token_ids == ()  # the model's first choice is </s>, never emitted
    assert done.text == ""


@pytest.mark.parametrize("min_tokens", [1, 5])
def test_min_tokens_suppresses_end_of_sequence(eos_model, min_tokens, backend):
    with codestral_engine.load(eos_model, backend) as eng:
        done = eng.fim("x = 1", max_tokens=10, min_tokens=min_tokens).result()
    assert done.finish_reason == "stop"
    assert done.usage.completion_tokens == min_tokens
    assert 2 not in done.completion_token_ids


def reference_text(engine, n=24):
    done = engine.fim(PREFIX, SUFFIX, max_tokens=n).result()
    pieces = [engine.tokenizer.decode([i]) for i in done.completion_token_ids]
    return done, pieces


def test_stop_string_split_across_tokens(fresh_engine):
    done, pieces = reference_text(fresh_engine)
    # A stop made of the end of token 4 and the start of token 5 (split across tokens).
    k = next(k for k in range(3, 20) if len(pieces[k]) >= 2 and len(pieces[k + 1]) >= 2)
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    expected = done.text[: done.text.find(stop)]
    deltas = list(fresh_engine.fim(PREFIX, SUFFIX, max_tokens=24, stop=[stop]))
    final = deltas[-1]
    text = "".join(e.text for e in deltas[:-1])
    assert final.finish_reason == "stop"
    assert text == expected
    assert stop not in text
    # Generation ended at the token that completed the stop, not later.
    assert final.usage.completion_tokens <= k + 2


def test_unmatched_stop_string_loses_nothing(fresh_engine):
    done, pieces = reference_text(fresh_engine)
    # Starts like a real piece of the output but never completes: the held-back text is released.
    partial = pieces[5] + "\u2603\u2603"
    again = fresh_engine.fim(PREFIX, SUFFIX, max_tokens=24, stop=[partial, "\u2603"]).result()
    assert again.text == done.text
    assert again.finish_reason == "length"


def test_stop_strings_wait_for_min_tokens(fresh_engine):
    done, pieces = reference_text(fresh_engine)
    stop = pieces[1].strip() or pieces[1]
    early = fresh_engine.fim(PREFIX, SUFFIX, max_tokens=24, stop=stop).result()
    assert early.finish_reason == "stop"
    assert early.usage.completion_tokens <= 2
    late = fresh_engine.fim(PREFIX, SUFFIX, max_tokens=24, stop=stop, min_tokens=10).result()
    assert late.usage.completion_tokens >= 10
    assert stop in late.text  # seen before min_tokens, so it did not end generation
    assert done.text.startswith(late.text)


def test_seeded_sampling_is_reproducible(fresh_engine):
    def sample(seed, top_p=0.9):
        done = fresh_engine.fim(
            PREFIX, SUFFIX, max_tokens=16, temperature=1.0, top_p=top_p, random_seed=seed
        ).result()
        return done.completion_token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    greedy = fresh_engine.fim(PREFIX, SUFFIX, max_tokens=16).result().completion_token_ids
    assert sample(7) != greedy


def test_concurrent_submissions_from_threads(fresh_engine, mlx_lm_greedy):
    prompts = [(f"value_{i} = compute({i})\n", f"\nprint(value_{i})") for i in range(8)]
    results: dict[int, codestral_engine.Completion] = {}

    def worker(indices):
        for i in indices:
            results[i] = fresh_engine.fim(*prompts[i], max_tokens=6).result()

    threads = [threading.Thread(target=worker, args=([t, t + 4],)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(8))
    for i, done in results.items():
        assert list(done.prompt_token_ids) == fresh_engine.tokenizer.encode_fim(*prompts[i])
        assert list(done.completion_token_ids) == mlx_lm_greedy(list(done.prompt_token_ids), 6)


def test_chat_generates_from_instruct_ids(fresh_engine, reference_tokenizer):
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages = [{"role": "user", "content": "Write a function that reverses a list."}]
    done = fresh_engine.chat(messages, max_tokens=5).result()
    expected = reference_tokenizer.encode_chat_completion(
        ChatCompletionRequest.model_validate({"messages": messages})
    ).tokens
    assert list(done.prompt_token_ids) == expected
    assert done.usage.completion_tokens == 5


def test_prompt_beyond_context_window(short_context_model, backend):
    with codestral_engine.load(short_context_model, backend) as eng:
        with pytest.raises(ContextLengthError, match="context window is 64") as info:
            eng.fim("x = 1\n" * 40)
        assert info.value.prompt_tokens > 64
        # Generation stops when the window is full (max_tokens within the window, not within
        # what is left of it; above the window it is refused, naming the window).
        ids = eng.tokenizer.encode_fim("y = 2\n" * 8)
        with pytest.raises(InvalidRequestError, match="context window of 64 tokens"):
            eng.fim("y = 2\n" * 8, max_tokens=1000)
        done = eng.fim("y = 2\n" * 8, max_tokens=64).result()
        assert done.finish_reason == "model_length"
        assert done.usage.completion_tokens == 64 - len(ids)


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"max_tokens": 2, "min_tokens": 5}, "lower min_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"random_seed": -3}, "random_seed"),
        ({"stop": [""]}, "must not be empty"),
        ({"stop": 5}, "stop must be a string"),
        ({"stop": ["a", 1]}, "stop must be a string"),
        ({"temprature": 0.5}, "Unknown option(s): temprature"),
    ],
)
def test_bad_parameters_are_clear_errors_and_the_engine_keeps_serving(engine, options, fragment):
    with pytest.raises(InvalidRequestError) as info:
        engine.fim(PREFIX, SUFFIX, **options)
    assert fragment in str(info.value)
    assert engine.fim(PREFIX, max_tokens=2).result().usage.completion_tokens == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.fim(None),
        lambda e: e.fim("x", suffix=3),
        lambda e: e.submit([]),
        lambda e: e.submit([1, 99999]),
        lambda e: e.submit([1, "2"]),
    ],
)
def test_bad_prompts_are_clear_errors(engine, call):
    with pytest.raises(InvalidRequestError):
        call(engine)
    assert engine.fim(PREFIX, max_tokens=1).result().usage.completion_tokens == 1


def test_a_failing_step_fails_only_its_request(fresh_engine, monkeypatch):
    real = fresh_engine.backend.generate

    def broken(*args, **kwargs):
        yield from list(real(*args, **kwargs))[:2]
        raise RuntimeError("device lost")

    monkeypatch.setattr(fresh_engine.backend, "generate", broken)
    with pytest.raises(codestral_engine.EngineError, match=r"device lost.*still running"):
        fresh_engine.fim(PREFIX, SUFFIX, max_tokens=5).result()
    monkeypatch.undo()
    assert fresh_engine.fim(PREFIX, SUFFIX, max_tokens=3).result().usage.completion_tokens == 3


@pytest.fixture
def passes(fresh_engine, monkeypatch) -> list[int]:
    """The token count of every pass through the model's body, as it runs."""
    backend, sizes = fresh_engine.backend, []
    if backend.name == "torch":
        body, method = type(backend.model), "forward"
    else:  # mlx-lm's llama: the body under the output head
        body, method = type(backend.model.model), "__call__"
    real = getattr(body, method)

    def counted(self, tokens, *args, **kwargs):
        sizes.append(int(tokens.shape[-1]))
        return real(self, tokens, *args, **kwargs)

    monkeypatch.setattr(body, method, counted)
    return sizes


@pytest.mark.parametrize("speculative", [False, True])
def test_the_first_token_reads_the_prompts_last_part_in_its_own_pass(
    fresh_engine, passes, speculative, mlx_lm_greedy
):
    was = fresh_engine.speculative
    fresh_engine.speculative = speculative
    assert fresh_engine.speculative is speculative
    try:
        chunk = PREFILL_CHUNK
        text = "import numpy as np\n" * 5 + PREFIX
        ids = fresh_engine.tokenizer.encode_fim(text, SUFFIX)[: 2 * chunk + 5]
        done = fresh_engine.submit(ids, max_tokens=1).result()
        # A full chunk, then the rest (up to 1.5 chunks) read with the first token: no pass of
        # its own for a small remainder, nor for the last token.
        assert passes == [chunk, chunk + 5]
        assert list(done.completion_token_ids) == mlx_lm_greedy(ids, 1)

        # The keystroke: on a cached prompt, the typed tokens and the first token are one pass.
        fresh_engine.submit(fresh_engine.tokenizer.encode_fim(text, SUFFIX), max_tokens=1).result()
        passes.clear()
        typed = fresh_engine.tokenizer.encode_fim(text + "print(np.", SUFFIX)
        done = fresh_engine.submit(typed, max_tokens=1).result()
        assert 0 < len(typed) - done.usage.cached_prompt_tokens < 8
        assert passes == [len(typed) - done.usage.cached_prompt_tokens]
        assert list(done.completion_token_ids) == mlx_lm_greedy(typed, 1)
    finally:
        fresh_engine.speculative = was
