"""Any server's status as the Jupyter side reads it: the engine's own model
(`codestral_engine.EngineStatus`, what our engine's `GET /v1/status` serves and an in-process
engine returns), with what a remote server adds (where it is, what it serves, the course's mode
in a classroom) and an error met asking (its kind and fix). The lab's status route extends it
again (lab/wire.py), so one model is read by the magic, served to the browser and mirrored in
`labextension/src/client/wire.ts`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from codestral_engine import EngineStatus


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
