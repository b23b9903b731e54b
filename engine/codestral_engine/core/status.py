"""What the engine says about itself: one typed status, served by `GET /v1/status`, returned by
an in-process engine, and extended by the Jupyter side (its lab route and the magic read it)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .engine import Engine
    from .events import Finished


class RequestUsage(BaseModel):
    """One request's token counts and speed, as a reader sees them (None: not reported):
    the last request in the status, and the Jupyter side's usage of any server's answer."""

    # A reader ignores fields it does not know (a shared engine may outlive an upgrade of the
    # Jupyter side); tests/test_server.py holds the route to exactly these fields.
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = None  # reused from the prompt cache (our engine)
    draft_tokens: int | None = None  # speculative decoding (our engine)
    accepted_draft_tokens: int | None = None
    time_to_first_token_s: float | None = None  # the server's, or measured by a client
    decode_tokens_per_s: float | None = None


class LastRequest(RequestUsage):
    """The last finished request's usage and how it ended."""

    finish_reason: str | None = None

    @classmethod
    def of(cls, final: Finished | None) -> LastRequest | None:
        if final is None:
            return None
        counts = {name: getattr(final.usage, name) for name in RequestUsage.model_fields}
        return cls(**counts, finish_reason=final.finish_reason)


class EngineStatus(BaseModel):
    """An engine's state (stopped | starting | loading | ready | error | stopping), its load's
    progress, the model and where it runs, its queue, memory and last request."""

    model_config = ConfigDict(extra="ignore")  # as LastRequest's
    state: str
    progress: float | None = None  # of a load, 0..1
    stage: str | None = None  # what the load does now
    error: str | None = None
    model: str | None = None
    model_path: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    last_request: LastRequest | None = None
    layout: str | None = None
    backend: str | None = None
    device: str | None = None
    threads: int | None = None
    context_length: int | None = None
    queue_length: int | None = None  # None: no engine of ours to ask (not loaded, remote)
    running_requests: int | None = None
    memory_bytes: int | None = None  # the process's resident memory
    prompt_cache_bytes: int | None = None
    finished_requests: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def of(cls, engine: Engine | None, state: str = "ready", **fields: Any) -> EngineStatus:
        """The status of this process's `engine` (None: not loaded yet), with the server's
        own `fields` (load progress, model id, uptime)."""
        if engine is None:
            return cls(state=state, pid=os.getpid(), **fields)
        return cls(
            state=state,
            pid=os.getpid(),
            last_request=LastRequest.of(engine.last_finished),
            layout=engine.checkpoint.layout,
            backend=engine.backend.name,
            device=engine.backend.device,
            threads=engine.backend.threads,
            context_length=engine.context_length,
            queue_length=engine.queue_length,
            running_requests=engine.running_requests,
            memory_bytes=psutil.Process().memory_info().rss,
            prompt_cache_bytes=engine.prompt_cache.nbytes,
            finished_requests=engine.finish_counts,
            **{"model": engine.model_path.name, **fields},
        )
