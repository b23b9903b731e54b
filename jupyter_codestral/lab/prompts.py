"""The prompts of the lab's requests, each within its token budget: the FIM context of a
completion (the notebook's cells, the kernel's facts, the project's definitions and recently
seen code) and the chat messages of a fix, counted with Codestral's tokenizer."""

from __future__ import annotations

from functools import cached_property, lru_cache

from ..context import fix
from ..context.notebook import Cell, ContextBuilder, FIMContext, TokenCounter
from ..context.project import Definition, Origin, ProjectContext
from ..context.project_outline import ProjectFiles
from ..errors import CodestralError
from .engine_link import CodestralCompletion
from .wire import CompleteRequest, FixRequest

FIX_SPARE_TOKENS = 256  # a fix may add lines (an import, a definition)
FIX_MAX_TOKENS = 4096


class LabPrompts:
    """The prompts of the lab's requests, each within its token budget."""

    def __init__(self, settings: CodestralCompletion, root_dir: str):
        self.settings = settings
        self.root_dir = root_dir
        self._project: tuple[tuple[str, ...], ProjectContext] | None = None
        self._builders: dict[int, ContextBuilder] = {}

    @cached_property
    def counter(self) -> TokenCounter:
        from codestral_engine import codestral_tokenizer

        return TokenCounter(codestral_tokenizer().count)

    def builder(self, budget: int | None) -> ContextBuilder:
        budget = budget or self.settings.context_tokens
        if budget not in self._builders:
            self._builders[budget] = ContextBuilder(
                self.counter, budget=budget, suffix_share=self.settings.suffix_share
            )
        return self._builders[budget]

    def project(self) -> ProjectContext:
        """The project context over the server's root and the admin's extra directories (a
        changed setting takes effect on the next request)."""
        roots = (self.root_dir, *self.settings.project_dirs)
        if self._project is None or self._project[0] != roots:
            self._project = (roots, ProjectContext(ProjectFiles(roots)))
        return self._project[1]

    def definitions(self, body: CompleteRequest | FixRequest, cursor: int | None):
        """The project's definitions for a request's document, if the user and the server
        want them (Python only: the signatures are Python's); `cursor` None: no cursor line
        to leave out of the current cell's imports."""
        if not (body.project and self.settings.project_context):
            return []
        if body.language.lower() not in ("python", "ipython"):
            return []
        origins = [Origin(o.name, o.file, o.qualname) for o in body.origins]
        sources = [c.source if c.cell_type == "code" else "" for c in body.cells]
        return self.project().definitions(
            body.path, sources, body.cell, cursor, origins, body.focus
        )

    def recent_code(self, body: CompleteRequest) -> list[Definition]:
        """The browser's recently seen code, after the definitions in the same share: none
        from this document or already in its other cells (the prompt holds those; the cell
        being typed in is not compared, or a chunk would come and go as the user types)."""
        if not self.settings.project_context:
            return []
        chunks = tuple((c.path, c.text) for c in body.recent if c.path != body.path)
        others = tuple(c.source for i, c in enumerate(body.cells) if i != body.cell)
        return _fresh_chunks(chunks, others)  # the same while the user types: remembered

    def fim_context(self, body: CompleteRequest) -> FIMContext:
        """The FIM prefix and suffix for a completion request's cursor."""
        cells = [Cell(c.cell_type, c.source) for c in body.cells]
        builder = self.builder(body.context_tokens)
        if body.cell < len(cells) and body.cursor <= len(cells[body.cell].source):
            definitions = self.definitions(body, body.cursor) + self.recent_code(body)
        else:
            definitions = []  # build() says what is wrong
        return builder.build(cells, body.cell, body.cursor, body.language, body.facts, definitions)

    def fix_request(self, body: FixRequest) -> tuple[list[dict[str, str]], int]:
        """The chat messages for a fix and the most tokens its answer may take: the whole cell
        again, with room to grow; a sentence or two to explain."""
        if body.cell >= len(body.cells):
            raise ValueError(
                f"Cell index {body.cell} is outside the notebook's {len(body.cells)} cells."
            )
        source = body.cells[body.cell].source
        cell_tokens = self.counter(source)
        if cell_tokens + FIX_SPARE_TOKENS > FIX_MAX_TOKENS:
            # Its fix could not be written back whole, and the cell alone may not fit the
            # model's window: no setting helps, a smaller cell does.
            raise CodestralError(
                f"The cell is {cell_tokens} tokens: too long to fix whole (at most "
                f"{FIX_MAX_TOKENS - FIX_SPARE_TOKENS}).",
                413,
                kind="cell_too_long",
                fix="Move the lines that fail into a cell of their own, run it, and ask for a "
                "fix there.",
            )
        failed = fix.from_error_output(
            source, body.error.ename, body.error.evalue, body.error.traceback
        )
        # The nearby cells, as the ghost text sees them around an empty cell in its place.
        cells = [Cell(c.cell_type, c.source) for c in body.cells]
        cells[body.cell] = Cell("code", "")
        builder = self.builder(body.context_tokens)
        around = builder.build(cells, body.cell, 0, body.language)
        explain = body.mode == "explain"
        names = set(failed.names())  # the facts of the names the cell and its error mention
        facts = [f for f in body.facts if f.split(":", 1)[0].strip() in names]
        # The project's code those names come from (a TypeError from a wrong keyword needs
        # the real signature), within the same share of the budget as the ghost text's.
        definitions = [d for d in self.definitions(body, None) if d.name in names]
        project, _, _ = builder.project_header(definitions, "#")
        messages = fix.fix_messages(
            failed,
            facts,
            above=around.prefix,
            below=around.suffix,
            explain=explain,
            project=project,
        )
        if explain:
            return messages, fix.EXPLAIN_TOKENS
        return messages, min(2 * cell_tokens + FIX_SPARE_TOKENS, FIX_MAX_TOKENS)


@lru_cache(maxsize=8)
def _fresh_chunks(chunks: tuple[tuple[str, str], ...], others: tuple[str, ...]):
    """The chunks with text that none of `others` already holds, as definitions."""
    return [
        Definition("", path, tuple(text.rstrip("\n").splitlines()))
        for path, text in chunks
        if text.strip() and not any(text.strip() in source for source in others)
    ]
