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

# Exports load on first use, so `import codestral_engine.serving.connection` (what the Jupyter side
# needs to find a running server) does not pay for the tokenizer and engine imports.
_EXPORTS = {
    "Engine": "core.engine",
    "load": "assembly.loading",
    "ContextLengthError": "errors",
    "EngineClosedError": "errors",
    "EngineError": "errors",
    "InvalidRequestError": "errors",
    "ModelLoadError": "errors",
    "QueueFullError": "errors",
    "Completion": "core.events",
    "Event": "core.events",
    "Finished": "core.events",
    "TextDelta": "core.events",
    "Usage": "core.events",
    "EngineStatus": "core.status",
    "LastRequest": "core.status",
    "RequestUsage": "core.status",
    "GenerationParams": "core.params",
    "codestral_tokenizer": "core.tokenizer",
    "Request": "core.request",
    "make_tiny": "weights.tiny",
    "ModelChoice": "assembly.model_choice",
    "choose_model": "assembly.model_choice",
    "is_demo_model": "assembly.model_choice",
}

if TYPE_CHECKING:
    from .assembly.loading import load
    from .assembly.model_choice import ModelChoice, choose_model, is_demo_model
    from .core.engine import Engine
    from .core.events import Completion, Event, Finished, TextDelta, Usage
    from .core.params import GenerationParams
    from .core.request import Request
    from .core.status import EngineStatus, LastRequest, RequestUsage
    from .core.tokenizer import codestral_tokenizer
    from .errors import (
        ContextLengthError,
        EngineClosedError,
        EngineError,
        InvalidRequestError,
        ModelLoadError,
        QueueFullError,
    )
    from .weights.tiny import make_tiny


# Modules the Jupyter side and tools use by name (`from codestral_engine import connection`).
_MODULES = {
    "connection": "serving.connection",
    "download": "assembly.download",
    "hub": "assembly.hub",
    "preflight": "assembly.preflight",
    "tokenizer": "core.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = import_module(f".{_MODULES[name]}", __name__)
    elif name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "Completion",
    "ContextLengthError",
    "Engine",
    "EngineClosedError",
    "EngineError",
    "EngineStatus",
    "Event",
    "Finished",
    "GenerationParams",
    "InvalidRequestError",
    "LastRequest",
    "ModelChoice",
    "ModelLoadError",
    "QueueFullError",
    "Request",
    "RequestUsage",
    "TextDelta",
    "Usage",
    "choose_model",
    "codestral_tokenizer",
    "is_demo_model",
    "load",
    "make_tiny",
]
