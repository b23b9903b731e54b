"""Any server's status as the Jupyter side reads it: the engine's own model
(`codestral_engine.EngineStatus`, what our engine's `GET /v1/status` serves and an in-process
engine returns), with what a remote server adds (where it is, what it serves, the course's mode
in a classroom) and an error met asking (its kind and fix). The lab's status route extends it
again (lab/wire.py), so one model is read by the magic, served to the browser and mirrored in
`labextension/src/client/wire.ts`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codestral_engine import EngineStatus

from ..errors import CodestralError


class ClassroomStatus(BaseModel):
    """What a course's JupyterHub service says of itself and of this student."""

    model_config = ConfigDict(extra="ignore")  # a service of another version may say more
    service: str
    user: str
    mode: str  # on | hints | off
    model: str
    upstream_protocol: str


class Status(EngineStatus):
    url: str | None = None  # a remote server's
    protocol: str | None = None  # how it is spoken to
    served_models: list[str] = Field(default_factory=list)
    classroom: ClassroomStatus | None = None
    kind: str | None = None  # an error's kind
    fix: str | None = None  # and what fixes it


def read_status(raw: Any, url: str) -> Status:
    """The status a server at `url` answered; one this version cannot read (a field of
    another type) is a `CodestralError` with the fix, not a crash of the status display."""
    try:
        return Status.model_validate(raw)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "the body"
        raise CodestralError(
            f"The server at {url} answered a status this version cannot read ({where}).",
            kind="protocol",
            fix="Use one version of jupyter-codestral on both sides; a shared engine started "
            "before an upgrade keeps running the old one: `%codestral stop`, then run again.",
        ) from None
