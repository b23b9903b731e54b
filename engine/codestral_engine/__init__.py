"""codestral_engine: Codestral fill-in-the-middle and chat on a local machine.

    engine = codestral_engine.load("path/to/Codestral-22B-v0.1")
    for event in engine.fim("def fib(n):", suffix="\\n\\nprint(fib(10))"):
        ...

`load` returns an `Engine`; `Engine.fim` / `Engine.chat` return a `Request` that yields
`TextDelta` events and a final `Finished` event (finish_reason, usage). `Request.cancel()` stops
it from any thread. Every user-facing error is an `EngineError`.
"""

from .engine import Engine, load
from .errors import (
    ContextLengthError,
    EngineClosedError,
    EngineError,
    InvalidRequestError,
    ModelLoadError,
)
from .events import Completion, Event, Finished, TextDelta, Usage
from .params import GenerationParams
from .request import Request
from .tiny import make_tiny

__all__ = [
    "Completion",
    "ContextLengthError",
    "Engine",
    "EngineClosedError",
    "EngineError",
    "Event",
    "Finished",
    "GenerationParams",
    "InvalidRequestError",
    "ModelLoadError",
    "Request",
    "TextDelta",
    "Usage",
    "load",
    "make_tiny",
]
