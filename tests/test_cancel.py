"""Cancellation: between prefill chunks, within one decode step, while queued; cache stays sound."""

from __future__ import annotations

import threading
import time

import pytest

import codestral_engine
from codestral_engine import EngineClosedError

from .conftest import PREFILL_CHUNK

LONG_PROMPT = "rows = []\nfor i in range(100):\n    rows.append(i * 2)\n" * 20


@pytest.fixture
def trace(fresh_engine, monkeypatch):
    """Wraps the real backend step loop to record prefill chunks and tokens, and to cancel the
    running request at an exact point (as a user's cancel arriving at that moment would)."""
    state = {"chunks": 0, "tokens": 0, "cancel_after_chunks": None, "cancel_after_tokens": None}
    real = fresh_engine.backend.generate

    def traced(tokens, cache, params, *, on_prefill, **kwargs):
        request = state["request"]

        def progress(done, total):
            if done:
                state["chunks"] += 1
            if state["chunks"] == state["cancel_after_chunks"]:
                request.cancel()
            on_prefill(done, total)

        for token in real(tokens, cache, params, on_prefill=progress, **kwargs):
            state["tokens"] += 1
            if state["tokens"] == state["cancel_after_tokens"]:
                request.cancel()
            yield token

    monkeypatch.setattr(fresh_engine.backend, "generate", traced)
    return state


def test_cancel_mid_prefill_stops_between_chunks(fresh_engine, trace, mlx_lm_greedy):
    ids = fresh_engine.tokenizer.encode_fim(LONG_PROMPT, "\nprint(rows)")
    assert len(ids) > 20 * PREFILL_CHUNK
    trace["cancel_after_chunks"] = 3
    trace["request"] = request = fresh_engine.submit(ids, max_tokens=5)
    done = request.result()
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens == 0
    assert trace["chunks"] == 3  # not the 20+ chunks of the whole prompt

    # The cache kept exactly the chunks that were prefilled; the next request resumes there
    # and generates what a cold run generates.
    trace["cancel_after_chunks"] = None
    trace["request"] = request = fresh_engine.submit(ids, max_tokens=5)
    again = request.result()
    assert again.usage.cached_prompt_tokens == 3 * PREFILL_CHUNK
    assert list(again.completion_token_ids) == mlx_lm_greedy(ids, 5)


def test_cancel_mid_decode_stops_within_one_step(fresh_engine, trace, mlx_lm_greedy):
    ids = fresh_engine.tokenizer.encode_fim("def area(r):\n    return", "\n")
    trace["cancel_after_tokens"] = 4
    trace["request"] = request = fresh_engine.submit(ids, max_tokens=50)
    done = request.result()
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens == 4  # the token in flight when cancel came, no more
    assert trace["tokens"] == 4

    trace["cancel_after_tokens"] = None
    trace["request"] = request = fresh_engine.submit(ids, max_tokens=8)
    assert list(request.result().completion_token_ids) == mlx_lm_greedy(ids, 8)


def test_cancel_from_another_thread_while_streaming(fresh_engine, mlx_lm_greedy):
    ids = fresh_engine.tokenizer.encode_fim("total = 0\n", "")
    request = fresh_engine.submit(ids, max_tokens=5000)
    events = iter(request)
    next(events)  # streaming has started
    threading.Thread(target=request.cancel).start()
    final = list(events)[-1]
    assert final.finish_reason == "cancelled"
    assert final.usage.completion_tokens < 5000
    follow = fresh_engine.submit(ids, max_tokens=6).result()
    assert list(follow.completion_token_ids) == mlx_lm_greedy(ids, 6)


def test_cancel_while_queued_never_runs(fresh_engine):
    blocker = fresh_engine.fim("x = 1\n", max_tokens=5000)
    queued = fresh_engine.fim("y = 2\n", max_tokens=5)
    queued.cancel()
    blocker.cancel()
    done = queued.result()
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens == 0
    assert done.usage.time_to_first_token_s is None
    assert blocker.result().finish_reason == "cancelled"


def test_leaving_a_request_block_cancels_it(fresh_engine):
    with fresh_engine.fim("z = 3\n", max_tokens=5000) as request:
        next(iter(request))
    start = time.perf_counter()
    assert fresh_engine.fim("z = 3\n", max_tokens=2).result().usage.completion_tokens == 2
    assert time.perf_counter() - start < 30  # not stuck behind 5000 tokens


def test_close_cancels_running_and_queued_requests(models, backend):
    eng = codestral_engine.load(models["mlx"], backend)
    running = eng.fim("a = 1\n", max_tokens=5000)
    next(iter(running))
    queued = eng.fim("b = 2\n", max_tokens=5)
    eng.close()
    assert running.result().finish_reason == "cancelled"
    assert queued.result().finish_reason == "cancelled"
    with pytest.raises(EngineClosedError, match="load"):
        eng.fim("c = 3\n")
