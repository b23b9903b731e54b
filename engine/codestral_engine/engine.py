"""The engine: one worker thread owns the model; callers submit requests from any thread."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from pathlib import Path
from typing import Any

from .backends import load_backend
from .backends.base import Backend
from .checkpoint import Checkpoint, inspect
from .errors import (
    ContextLengthError,
    EngineClosedError,
    EngineError,
    InvalidRequestError,
    ModelLoadError,
)
from .generation import Runtime, run
from .params import GenerationParams
from .prompt_cache import PromptCache
from .request import Request
from .tokenizer import CodestralTokenizer, find_tokenizer_file

log = logging.getLogger(__name__)

DEFAULT_PREFILL_CHUNK = 512
# Codestral-22B's KV cache is 224 KiB per token (bf16): 2 GiB keeps ~9K tokens of context.
DEFAULT_PROMPT_CACHE_BYTES = 2 << 30
DEFAULT_PROMPT_CACHE_ENTRIES = 8
_STOP = object()
_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


class Engine:
    """A loaded model serving FIM and chat requests one at a time, in submission order."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: CodestralTokenizer,
        checkpoint: Checkpoint,
        *,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
        prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
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
            context_length=checkpoint.context_length,
            prefill_chunk=prefill_chunk,
        )
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._running: Request | None = None
        self._worker = threading.Thread(target=self._serve, name="codestral-engine", daemon=True)
        self._worker.start()
        _open_engines.add(self)

    @property
    def model_path(self) -> Path:
        return self.checkpoint.path

    @property
    def context_length(self) -> int:
        return self.checkpoint.context_length

    @property
    def queue_length(self) -> int:
        """Requests waiting behind the one running."""
        return self._queue.qsize()

    @property
    def prompt_cache(self) -> PromptCache:
        return self._runtime.prompt_cache

    def fim(self, prompt: str, suffix: str = "", **params: Any) -> Request:
        """Fill in the middle between `prompt` (code before the cursor) and `suffix` (after)."""
        for name, value in (("prompt", prompt), ("suffix", suffix)):
            if not isinstance(value, str):
                raise InvalidRequestError(f"{name} must be a string, got {type(value).__name__}.")
        return self.submit(self.tokenizer.encode_fim(prompt, suffix), **params)

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> Request:
        """Answer a conversation ([{'role': 'user', 'content': ...}, ...]) in instruct format."""
        return self.submit(self.tokenizer.encode_chat(messages), **params)

    def submit(self, prompt_token_ids: list[int], **params: Any) -> Request:
        """Queue a request given as exact token ids; validation errors raise here, at once."""
        options = GenerationParams.from_options(**params)
        ids = list(prompt_token_ids)
        vocab = self.tokenizer.vocab_size
        if not ids or any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise InvalidRequestError(
                f"prompt_token_ids must be a non-empty list of ids in [0, {vocab})."
            )
        if len(ids) >= self.context_length:
            raise ContextLengthError(
                f"The prompt is {len(ids)} tokens, but the model's context window is "
                f"{self.context_length} and at least one token must be generated. Shorten the "
                "prompt or suffix.",
                prompt_tokens=len(ids),
                context_length=self.context_length,
            )
        request = Request(ids, options)
        with self._lock:
            if self._closed:
                raise EngineClosedError(
                    "The engine is closed. Load the model again with codestral_engine.load()."
                )
            self._queue.put(request)
        return request

    def close(self) -> None:
        """Cancel queued requests, finish the running one's cleanup and stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._queue.queue)
            self._queue.put(_STOP)
        for request in [*pending, self._running]:
            if request is not None:
                request.cancel()
        if threading.current_thread() is not self._worker:
            self._worker.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self) -> None:
        try:
            while (request := self._queue.get()) is not _STOP:
                self._running = request
                try:
                    run(request, self._runtime)
                except Exception as exc:  # the worker must survive anything one request does
                    log.exception("request %s failed", request.id)
                    request.fail(
                        EngineError(
                            f"Generation failed: {exc}. The engine is still running; "
                            "retry the request."
                        )
                    )
                finally:
                    self._running = None
        finally:
            self.backend.release_thread()


def load(
    path: str | Path,
    backend: str = "auto",
    *,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
    prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
) -> Engine:
    """Load a Codestral model directory (MLX, Hugging Face or Mistral-native layout)."""
    checkpoint = inspect(path)
    tokenizer = CodestralTokenizer(find_tokenizer_file(checkpoint.path))
    if tokenizer.vocab_size != int(checkpoint.config["vocab_size"]):
        raise ModelLoadError(
            f"The tokenizer {tokenizer.path.name} has {tokenizer.vocab_size} tokens but the model "
            f"in {checkpoint.path} expects {checkpoint.config['vocab_size']}. Use the tokenizer "
            "released with these weights."
        )
    return Engine(
        load_backend(checkpoint, backend),
        tokenizer,
        checkpoint,
        prefill_chunk=prefill_chunk,
        prompt_cache_bytes=prompt_cache_bytes,
        prompt_cache_entries=prompt_cache_entries,
    )


@atexit.register
def _close_open_engines() -> None:
    # Workers are daemon threads; join them before the interpreter tears down the runtime.
    for engine in list(_open_engines):
        engine.close()
