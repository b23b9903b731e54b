"""The Jupyter side's one error root: every failure a user sees, with what to do about it."""

from __future__ import annotations

from typing import Any


class CodestralError(Exception):
    """A user-facing failure. `kind` groups repeats (the browser shows each kind once), `fix`
    says what to do, `status` is the HTTP status that caused it (None: nothing answered)."""

    def __init__(
        self, message: str, status: int | None = None, *, kind: str = "error", fix: str = ""
    ):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.fix = fix

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} {self.fix}" if self.fix else message

    @property
    def message(self) -> str:
        return super().__str__()

    def as_json(self) -> dict[str, Any]:
        return {"error": {"kind": self.kind, "message": self.message, "fix": self.fix}}
