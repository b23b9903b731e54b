"""The engine's user-facing errors: one root, each message says what went wrong and how to fix it.

Callers (the CLI, the HTTP server, the Jupyter magic) catch `EngineError` and show its message
as is; anything else escaping the engine is a bug.
"""


class EngineError(Exception):
    """Root of every error the engine reports to a user."""


class ModelLoadError(EngineError):
    """The model directory cannot be loaded (missing file, bad tensor, unknown architecture)."""


class InvalidRequestError(EngineError):
    """A request parameter is out of range or of the wrong type."""


class ContextLengthError(InvalidRequestError):
    """The prompt does not fit in the model's context window."""

    def __init__(self, message: str, prompt_tokens: int, context_length: int):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class EngineClosedError(EngineError):
    """The engine was closed; requests can no longer be submitted."""


class QueueFullError(EngineError):
    """Too many requests are waiting; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineStoppingError(EngineError):
    """The server is exiting (`reason`: "stop" for a signal, "idle" for its idle timeout): a
    request it could not finish in time is cut, and a new one refused, with this error."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason
