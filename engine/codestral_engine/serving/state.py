"""What the server's routes share: the engine once loaded and its load progress, the requests
in flight (for the idle timeout, and for a shutdown to cut), and whether the server is exiting."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..assembly.loading import load
from ..core.engine import Engine
from ..errors import EngineError, EngineStoppingError
from .http_input import APIError

LOADING_RETRY_AFTER_S = 5
# The error `type` of a request refused or cut because the engine exits: clients retry an
# idle exit on a fresh engine at once.
STOPPING_TYPES = {"idle": "engine_idle_exit", "stop": "engine_stopped"}


@dataclass
class ServerState:
    """What the routes share: the engine once loaded, and what the status route reports."""

    model_path: Path
    token: str
    backend: str = "auto"
    state: str = "loading"  # loading | ready | error
    progress: float = 0.0
    stage: str = "starting"
    error: str | None = None
    engine: Engine | None = None
    started: float = field(default_factory=time.time)
    log_prompts: bool = False  # print each FIM prompt and chat request to stderr (debugging)
    # Activity for the idle timeout: completion and chat requests, not status polls.
    open_requests: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    # Set (on the event loop) when the server starts to exit: "stop" (a signal) or "idle".
    closing: str | None = None
    running: set = field(default_factory=set)  # the engine requests of open HTTP requests
    cut_error: EngineStoppingError | None = None  # set once the server cuts what runs
    tokenizing: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tokenize")
    )

    def begin(self) -> None:
        """Count a new completion request, or refuse it (retryably) if the server is exiting.
        Runs on the event loop with no await between the check and the count, as does the
        idle decision: a request is counted before the server decides to exit, or refused."""
        if self.closing is not None:
            raise APIError(
                503,
                self.stopping_message("is exiting"),
                retry_after=1,
                kind=STOPPING_TYPES[self.closing],
            )
        self.open_requests += 1
        self.last_activity = time.monotonic()

    def end(self) -> None:
        self.open_requests -= 1
        self.last_activity = time.monotonic()

    def stopping_message(self, what: str) -> str:
        why = "after its idle timeout" if self.closing == "idle" else "(it was stopped)"
        return (
            f"The engine (pid {os.getpid()}) {what} {why}. Retry the request: a new engine "
            "starts on demand (or start `codestral-engine serve` again)."
        )

    def cut(self) -> None:
        """End every running request now, and any still being tokenized as soon as it is
        submitted, with an error its client receives."""
        self.cut_error = EngineStoppingError(
            self.stopping_message("cut this answer short while exiting"), self.closing or "stop"
        )
        for request in list(self.running):
            self.cut_one(request)

    def cut_one(self, request) -> None:
        request.fail(self.cut_error)
        request.cancel()

    def idle_seconds(self) -> float | None:
        """How long nothing has been asked of the ready model; None while a request is open
        or the model loads."""
        if self.open_requests or self.state == "loading":
            return None
        return time.monotonic() - self.last_activity

    @property
    def model_id(self) -> str:
        return self.model_path.name

    def load(self, **options: Any) -> None:
        """Load the model (call on a background thread); state follows along."""
        try:
            self.engine = load(self.model_path, self.backend, progress=self._progress, **options)
            self.last_activity = time.monotonic()  # idle time counts from being ready
            self.state = "ready"
        except EngineError as exc:
            self.error, self.state = str(exc), "error"
        except Exception as exc:  # out of memory, an unreadable file: the same, not a hang
            self.error, self.state = f"{type(exc).__name__}: {exc}", "error"

    def load_in_background(self, **options: Any) -> threading.Thread:
        thread = threading.Thread(target=self.load, kwargs=options, name="model-load", daemon=True)
        thread.start()
        return thread

    def _progress(self, fraction: float, stage: str) -> None:
        self.progress, self.stage = fraction, stage

    def ready_engine(self) -> Engine:
        if self.state == "loading":
            raise APIError(
                503,
                f"The model is still loading ({self.progress:.0%}: {self.stage}). Retry shortly.",
                retry_after=LOADING_RETRY_AFTER_S,
            )
        if self.state == "error" or self.engine is None:
            raise APIError(503, f"The model failed to load: {self.error}")
        return self.engine
