"""The engine: one worker thread owns the model; callers submit requests from any thread."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from pathlib import Path
from typing import Any

from ..errors import ContextLengthError, EngineError, InvalidRequestError
from ..weights.checkpoint import Checkpoint
from .backend import Backend
from .events import Finished
from .generation import Runtime, run
from .params import GenerationParams
from .prompt_cache import PromptCache
from .request import Request
from .scheduler import BATCH, INTERACTIVE, PRIORITIES, Scheduler
from .tokenizer import CodestralTokenizer

log = logging.getLogger(__name__)

DEFAULT_PREFILL_CHUNK = 512
# Codestral-22B's KV cache is 224 KiB per token (bf16): 2 GiB keeps ~9K tokens of context.
DEFAULT_PROMPT_CACHE_BYTES = 2 << 30
DEFAULT_PROMPT_CACHE_ENTRIES = 8
DEFAULT_MAX_QUEUED = 32
_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


class Engine:
    """A loaded model serving FIM and chat requests, one at a time, interactive ones first."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: CodestralTokenizer,
        checkpoint: Checkpoint,
        *,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
        prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
        max_queued: int = DEFAULT_MAX_QUEUED,
        context_length: int | None = None,
        speculative: bool | None = None,
    ):
        if prefill_chunk < 1:
            raise EngineError(f"prefill_chunk must be >= 1, got {prefill_chunk}.")
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.backend = backend
        self._runtime = Runtime(
            backend=backend,
            tokenizer=tokenizer,
            prompt_cache=PromptCache(prompt_cache_bytes, prompt_cache_entries),
            context_length=min(
                context_length or checkpoint.context_length, checkpoint.context_length
            ),
            prefill_chunk=prefill_chunk,
            preempt=self._run_more_urgent,
            # None: where the benchmark shows it wins (the backend says; bench/README.md).
            speculative=backend.speculates if speculative is None else speculative,
        )
        backend.slot_limit = self._runtime.context_length  # preallocated caches fit the window
        self._scheduler = Scheduler(max_queued)
        self._lock = threading.Lock()
        self._active: set[Request] = set()  # running, or preempted by a more urgent request
        self._sessions: dict[str, Request] = {}
        self._worker = threading.Thread(target=self._serve, name="codestral-engine", daemon=True)
        self._worker.start()
        _open_engines.add(self)

    @property
    def speculative(self) -> bool:
        """Whether requests decode with prompt-lookup speculative decoding (settable: a
        request reads it when it starts)."""
        return self._runtime.speculative

    @speculative.setter
    def speculative(self, on: bool) -> None:
        self._runtime.speculative = bool(on)

    @property
    def model_path(self) -> Path:
        return self.checkpoint.path

    @property
    def context_length(self) -> int:
        """Tokens per request, prompt and completion together (the model's window, or less)."""
        return self._runtime.context_length

    @property
    def queue_length(self) -> int:
        """Requests waiting (not counting those running)."""
        return len(self._scheduler)

    @property
    def running_requests(self) -> int:
        """Requests being prefilled or decoded (a paused batch request counts)."""
        with self._lock:
            return len(self._active)

    @property
    def prompt_cache(self) -> PromptCache:
        return self._runtime.prompt_cache

    @property
    def last_finished(self) -> Finished | None:
        """The final event of the request that finished last (whoever was listening)."""
        return self._runtime.last_finished

    @property
    def finish_counts(self) -> dict[str, int]:
        """How many requests ended for each finish reason (stop, length, cancelled, ...)."""
        return dict(self._runtime.finish_counts)

    def fim(self, prompt: str, suffix: str = "", **params: Any) -> Request:
        """Fill in the middle between `prompt` (code before the cursor) and `suffix` (after).

        Runs as an interactive request unless `priority="batch"` is given.
        """
        for name, value in (("prompt", prompt), ("suffix", suffix)):
            if not isinstance(value, str):
                raise InvalidRequestError(f"{name} must be a string, got {type(value).__name__}.")
        self._refuse_oversized(len(prompt) + len(suffix))
        return self._enqueue(self.tokenizer.encode_fim(prompt, suffix), **params)

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> Request:
        """Answer a conversation ([{'role': 'user', 'content': ...}, ...]) in instruct format.

        Runs as a batch request unless `priority="interactive"` is given.
        """
        if isinstance(messages, list):
            contents = [m.get("content") for m in messages if isinstance(m, dict)]
            self._refuse_oversized(sum(_text_length(c) for c in contents))
        params.setdefault("priority", "batch")
        return self._enqueue(self.tokenizer.encode_chat(messages), **params)

    def submit(
        self,
        prompt_token_ids: list[int],
        *,
        priority: str = "interactive",
        session: str | None = None,
        **params: Any,
    ) -> Request:
        """Queue a request given as exact token ids; bad input raises here, at once.

        `session`: a key naming where the request comes from (an editor, a cell). A new
        request with the same key cancels the previous one if it is still queued or running:
        the keystroke case, where only the latest prompt matters.
        """
        ids = list(prompt_token_ids)
        vocab = self.tokenizer.vocab_size
        if not ids or any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise InvalidRequestError(
                f"prompt_token_ids must be a non-empty list of ids in [0, {vocab})."
            )
        return self._enqueue(ids, priority=priority, session=session, **params)

    def _enqueue(
        self,
        ids: list[int],
        *,
        priority: str = "interactive",
        session: str | None = None,
        **params: Any,
    ) -> Request:
        # Ids from our own tokenizer need no per-token check (0.7 ms for 8K tokens per keystroke).
        options = GenerationParams.from_options(**params)
        if priority not in PRIORITIES:
            raise InvalidRequestError(
                f"priority must be 'interactive' or 'batch', got {priority!r}."
            )
        if session is not None and not isinstance(session, str):
            raise InvalidRequestError("session must be a string.")
        if len(ids) >= self.context_length:
            raise _too_long(len(ids), self.context_length)
        asks = [("max_tokens", options.max_tokens or 0), ("min_tokens", options.min_tokens)]
        name, asked = max(asks, key=lambda item: item[1])
        if asked > self.context_length:
            raise InvalidRequestError(
                f"{name} ({asked}) is above the model's context window of "
                f"{self.context_length} tokens; ask for at most {self.context_length - len(ids)} "
                "with this prompt, or leave it out to generate until the window is full."
            )
        request = Request(ids, options, PRIORITIES[priority], session)
        with self._lock:
            self._scheduler.put(request)
            if session is not None:
                superseded = self._sessions.get(session)
                self._sessions[session] = request
                if superseded is not None:
                    superseded.cancel()
        return request

    def close(self) -> None:
        """Cancel queued and running requests and stop the worker."""
        with self._lock:  # the worker adds and removes active requests
            active = list(self._active)
        for request in [*self._scheduler.close(), *active]:
            request.cancel()
        if threading.current_thread() is not self._worker:
            self._worker.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _refuse_oversized(self, characters: int) -> None:
        # Before tokenizing: a multi-megabyte prompt cannot fit, whatever its tokens.
        limit = self.context_length * self.tokenizer.max_token_chars
        if characters > limit:
            raise _too_long(characters // self.tokenizer.max_token_chars, self.context_length)

    def _serve(self) -> None:
        try:
            while (request := self._scheduler.get()) is not None:
                self._execute(request)
        finally:
            self.backend.release_thread()

    def _execute(self, request: Request) -> None:
        with self._lock:
            self._active.add(request)
        try:
            run(request, self._runtime)
        except Exception as exc:  # the worker must survive anything one request does
            log.exception("request %s failed", request.id)
            request.fail(
                EngineError(
                    f"Generation failed: {exc}. The engine is still running; retry the request."
                )
            )
        finally:
            with self._lock:
                self._active.discard(request)
                if request.session is not None and self._sessions.get(request.session) is request:
                    del self._sessions[request.session]

    def _run_more_urgent(self, current: Request) -> None:
        if current.priority == INTERACTIVE:
            return
        while (urgent := self._scheduler.pop_more_urgent(BATCH)) is not None:
            self._execute(urgent)


def _text_length(content: Any) -> int:
    """Characters of a message's text: a string, or a list of parts ({"type": "text",
    "text": ...}, as OpenAI-style clients send it)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return sum(len(text) for text in parts if isinstance(text, str))
    return 0


def _too_long(prompt_tokens: int, context_length: int) -> ContextLengthError:
    return ContextLengthError(
        f"The prompt is {prompt_tokens} tokens, but the model's context window is "
        f"{context_length} and at least one token must be generated. Shorten the prompt or suffix.",
        prompt_tokens=prompt_tokens,
        context_length=context_length,
    )


@atexit.register
def _close_open_engines() -> None:
    # Workers are daemon threads; join them before the interpreter tears down the runtime.
    for engine in list(_open_engines):
        engine.close()
