"""The lab routes' wire protocol: what the browser sends to `POST codestral/complete` (ghost
text) and `POST codestral/fix` (a fix at a traceback), and each newline-delimited JSON line it
gets back. `labextension/src/client/wire.ts` mirrors these
models field for field (tests/test_lab_wire.py fails when the two drift apart).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ..client.shapes import Usage
from ..client.status import Status
from ..context.kernel_facts import MAX_LINE, MAX_NAMES
from ..context.notebook import LINE_RESERVE

MAX_RECENT = 16  # chunks in the browser's ring of recently seen code (llama.vim keeps 16)
MAX_CHUNK_CHARS = 8_000


class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell_type: Literal["code", "markdown", "raw"] = "code"
    source: StrictStr


class Origin(BaseModel):
    """Where the kernel says a name comes from (kernel_facts' `origins`)."""

    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(max_length=200)
    file: StrictStr = Field(max_length=4_096)
    qualname: StrictStr = Field("", max_length=400)


class RecentChunk(BaseModel):
    """Code the user edited or viewed recently in another document of this JupyterLab."""

    model_config = ConfigDict(extra="forbid")
    path: StrictStr = Field(max_length=4_096)
    text: StrictStr = Field(max_length=MAX_CHUNK_CHARS)


Names = Annotated[list[Annotated[StrictStr, Field(max_length=200)]], Field(max_length=400)]


class ProjectFields(BaseModel):
    """What the project context needs: where the document is, where the kernel says its names
    come from, the names the current cell held when the cursor entered it, and recently seen
    code of other documents (edited before viewed, newest first)."""

    path: StrictStr | None = Field(None, max_length=4_096)  # under the server's root
    project: StrictBool = True  # the user's "project code in the context" setting
    origins: list[Origin] = Field([], max_length=MAX_NAMES)
    focus: Names = []
    recent: list[RecentChunk] = Field([], max_length=MAX_RECENT)


class CompleteRequest(ProjectFields):
    """The notebook (or file) and where the cursor is, with this suggestion's settings."""

    model_config = ConfigDict(extra="forbid")
    cells: list[Cell] = Field(min_length=1, max_length=10_000)
    cell: StrictInt = Field(ge=0)
    cursor: StrictInt = Field(ge=0)  # in code points of the cell's source
    language: StrictStr = "python"
    max_tokens: StrictInt = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: StrictInt | None = Field(None, ge=0)
    multiline: StrictBool = True
    time_budget_ms: StrictInt = Field(0, ge=0)  # 0: no first-line time budget
    context_tokens: StrictInt | None = Field(None, ge=2 * LINE_RESERVE, le=32_768)
    session: StrictStr | None = Field(None, max_length=200)
    warm: StrictBool = False
    # Live objects in the kernel ("name: description" lines from kernel_facts' probe).
    facts: list[Annotated[StrictStr, Field(max_length=MAX_LINE)]] = Field([], max_length=MAX_NAMES)


class ErrorOutput(BaseModel):
    """A notebook error output, as nbformat stores it (IPython's traceback lines, coloured)."""

    model_config = ConfigDict(extra="ignore")  # output_type and whatever a kernel adds
    ename: StrictStr = Field(max_length=1_000)
    evalue: StrictStr = Field(max_length=20_000)
    traceback: list[Annotated[StrictStr, Field(max_length=100_000)]] = Field([], max_length=1_000)


class FixRequest(ProjectFields):
    """A failed cell (`cells[cell]`, as it is now) and its error output: propose the corrected
    cell ("fix"), or explain the error in a sentence or two ("explain": the hints mode)."""

    model_config = ConfigDict(extra="forbid")
    cells: list[Cell] = Field(min_length=1, max_length=10_000)
    cell: StrictInt = Field(ge=0)
    error: ErrorOutput
    language: StrictStr = "python"
    mode: Literal["fix", "explain"] = "fix"
    context_tokens: StrictInt | None = Field(None, ge=2 * LINE_RESERVE, le=32_768)
    facts: list[Annotated[StrictStr, Field(max_length=MAX_LINE)]] = Field([], max_length=MAX_NAMES)


class ContextEvent(BaseModel):
    """First line: what the prompt holds."""

    type: Literal["context"] = "context"
    prompt_tokens: int
    cells_above: int
    cells_below: int
    elided_above: int
    elided_below: int
    facts: int = 0  # kernel facts in the prompt's header
    definitions: int = 0  # the project's definitions in the prompt's header


class DeltaEvent(BaseModel):
    type: Literal["delta"] = "delta"
    text: str


class DoneEvent(BaseModel):
    """Last line of a suggestion that ended well."""

    type: Literal["done"] = "done"
    finish_reason: str | None
    usage: Usage | None  # None: the server did not say


class ErrorInfo(BaseModel):
    kind: str
    message: str
    fix: str = ""


class ErrorEvent(BaseModel):
    """Last line of a suggestion that failed; also the body of a 4xx answer (without `type`)."""

    type: Literal["error"] = "error"
    error: ErrorInfo


STREAM_EVENTS = (ContextEvent, DeltaEvent, DoneEvent, ErrorEvent)


class LabSettings(BaseModel):
    """The server's settings the browser follows (`c.CodestralCompletion`)."""

    enabled: bool
    context_tokens: int
    suffix_share: float
    max_tokens_limit: int


class LabStatus(Status):
    """`GET codestral/status`: the engine's status (client/status.py), where it runs and
    the server's settings."""

    engine: str  # shared | remote
    enabled: bool
    pull_command: str
    settings: LabSettings
