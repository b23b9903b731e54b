"""codestral_engine: Codestral fill-in-the-middle and chat on a local machine.

    engine = codestral_engine.load("path/to/Codestral-22B-v0.1")
    for event in engine.fim("def fib(n):", suffix="\\n\\nprint(fib(10))"):
        ...

`load` returns an `Engine`; `Engine.fim` / `Engine.chat` return a `Request` that yields
`TextDelta` events and a final `Finished` event (finish_reason, usage). `Request.cancel()` stops
it from any thread. Every user-facing error is an `EngineError`. `choose_model` is the one rule
for which model a process serves when the user names none.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Exports load on first use, so `import codestral_engine.connection` (what the Jupyter side
# needs to find a running server) does not pay for the tokenizer and engine imports.
_EXPORTS = {
    "Engine": "engine",
    "load": "engine",
    "ContextLengthError": "errors",
    "EngineClosedError": "errors",
    "EngineError": "errors",
    "InvalidRequestError": "errors",
    "ModelLoadError": "errors",
    "QueueFullError": "errors",
    "Completion": "events",
    "Event": "events",
    "Finished": "events",
    "TextDelta": "events",
    "Usage": "events",
    "GenerationParams": "params",
    "Request": "request",
    "make_tiny": "tiny",
    "ModelChoice": "model_choice",
    "choose_model": "model_choice",
}

if TYPE_CHECKING:
    from .engine import Engine, load
    from .errors import (
        ContextLengthError,
        EngineClosedError,
        EngineError,
        InvalidRequestError,
        ModelLoadError,
        QueueFullError,
    )
    from .events import Completion, Event, Finished, TextDelta, Usage
    from .model_choice import ModelChoice, choose_model
    from .params import GenerationParams
    from .request import Request
    from .tiny import make_tiny


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


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
    "ModelChoice",
    "ModelLoadError",
    "QueueFullError",
    "Request",
    "TextDelta",
    "Usage",
    "choose_model",
    "load",
    "make_tiny",
]
