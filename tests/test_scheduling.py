"""Interactive FIM before batch chat, a bounded queue, session supersession, load progress."""

from __future__ import annotations

import threading
import time

import pytest

import codestral_engine
from codestral_engine import ContextLengthError
from codestral_engine.errors import QueueFullError

from .helpers import preempted

QUESTION = [{"role": "user", "content": "Write a long tutorial about Python decorators."}]


def finish_times(requests: dict) -> dict:
    """Consume each request on its own thread; record when each finished and its result."""
    done = {}

    def consume(name, request):
        result = request.result()
        done[name] = (time.perf_counter(), result)

    threads = [threading.Thread(target=consume, args=item) for item in requests.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return done


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "random_seed": 5}])
def test_fim_preempts_a_running_chat_without_changing_it(fresh_engine, sampling):
    alone = fresh_engine.chat(QUESTION, max_tokens=300, **sampling).result()
    fresh_engine.prompt_cache.clear()

    final, fim_result, fim_first = preempted(
        fresh_engine, QUESTION, ("def area(r):\n    return", "\n"), 3, max_tokens=300, **sampling
    )
    assert fim_result.usage.completion_tokens == 3
    assert fim_first  # without preemption the chat ends first
    assert final.finish_reason == "length"
    # The FIM ran between two chat steps: the chat's own tokens and random stream are untouched.
    assert final.completion_token_ids == alone.completion_token_ids


def test_waiting_interactive_requests_go_before_waiting_batch_ones(fresh_engine, monkeypatch):
    # Order of *starts*: a finish order would also hold under FIFO plus preemption.
    started = []
    real = fresh_engine.backend.generate

    def recording(tokens, *args, **kwargs):
        started.append(tokens)
        return real(tokens, *args, **kwargs)

    monkeypatch.setattr(fresh_engine.backend, "generate", recording)
    blocker = fresh_engine.fim("x = 1\n", max_tokens=60)  # interactive: nothing preempts it
    next(iter(blocker))
    chat = fresh_engine.chat(QUESTION, max_tokens=2)  # queued first...
    fim = fresh_engine.fim("y = 2\n", max_tokens=2)  # ...but runs first
    finish_times({"chat": chat, "fim": fim, "blocker": blocker})
    fim_ids, chat_ids = list(fim.prompt_token_ids), list(chat.prompt_token_ids)
    assert len(started) == 3
    assert fim_ids[-len(started[1]) :] == started[1]  # the second start is the FIM
    assert chat_ids[-len(started[2]) :] == started[2]  # the chat only after it


def test_full_queue_is_refused_at_once(models, backend):
    with codestral_engine.load(models["mlx"], backend, max_queued=2) as eng:
        running = eng.fim("a = 1\n", max_tokens=5000)
        next(iter(running))
        waiting = [eng.fim("b = 2\n", max_tokens=2), eng.fim("c = 3\n", max_tokens=2)]
        with pytest.raises(QueueFullError) as info:
            eng.fim("d = 4\n", max_tokens=2)
        assert info.value.retry_after_s > 0
        assert "Retry" in str(info.value)
        running.cancel()
        assert [w.result().usage.completion_tokens for w in waiting] == [2, 2]
        assert eng.fim("e = 5\n", max_tokens=2).result().usage.completion_tokens == 2


def test_a_new_request_in_the_same_session_supersedes_the_old(fresh_engine):
    old = fresh_engine.fim("total = 0\n", max_tokens=5000, session="cell-7")
    next(iter(old))
    queued_old = fresh_engine.fim("total = 1\n", max_tokens=5, session="cell-8")
    other = fresh_engine.fim("total = 2\n", max_tokens=5, session="cell-9")
    newer = fresh_engine.fim("total = 3\n", max_tokens=5, session="cell-8")
    latest = fresh_engine.fim("total = 0\nt", max_tokens=5, session="cell-7")
    assert old.result().finish_reason == "cancelled"
    assert queued_old.result().finish_reason == "cancelled"
    assert latest.result().finish_reason == "length"
    assert newer.result().finish_reason == "length"
    assert other.result().finish_reason == "length"  # other sessions are left alone


def test_load_reports_progress(models, backend):
    seen = []
    with codestral_engine.load(
        models["mistral"], backend, progress=lambda f, stage: seen.append((f, stage))
    ):
        pass
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(fractions) >= 5  # embedding, each layer, norm, head
    stages = [stage for _, stage in seen]
    starting = stages.index(f"starting {'mlx' if backend == 'mlx' else 'torch'}")
    weights = [i for i, stage in enumerate(stages) if "loading weights" in stage]
    assert 0 < starting < weights[0]  # the framework import is a stage of its own
    assert 0 < fractions[starting] < fractions[weights[0]] < fractions[weights[-1]]


def test_multi_megabyte_prompt_is_refused_before_tokenizing(engine, monkeypatch):
    def never(*_args):
        raise AssertionError("a prompt this size must be refused before tokenizing")

    monkeypatch.setattr(engine.tokenizer, "encode_fim", never)
    monkeypatch.setattr(engine.tokenizer, "encode_chat", never)
    with pytest.raises(ContextLengthError, match="context window"):
        engine.fim("x" * 5_000_000)
    with pytest.raises(ContextLengthError):
        engine.chat([{"role": "user", "content": "y" * 5_000_000}])
