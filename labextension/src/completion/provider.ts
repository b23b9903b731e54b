/** Codestral as a JupyterLab inline completion provider (ghost text). */

import {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionItem,
  IInlineCompletionList,
  IInlineCompletionProvider
} from '@jupyterlab/completer';
import { Text } from '@jupyterlab/coreutils';
import { DocumentWidget } from '@jupyterlab/docregistry';
import { FileEditor } from '@jupyterlab/fileeditor';
import { NotebookPanel } from '@jupyterlab/notebook';

import { streamCompletion } from '../client/api';
import { KernelFacts } from '../context/kernelFacts';
import {
  notebookCells,
  notebookLanguage,
  notebookPolicy,
  NotebookPolicy
} from '../context/notebookDocument';
import { allowsBlock, CursorContext } from './postprocess';
import { DEFAULT_SETTINGS, MultilinePolicy, Settings } from '../settings';
import { CompletionRequest, Suggestion, SuggestionSource } from './suggestions';
import { namesToProbe } from '../context/probeNames';
import { RecentCode } from '../context/recentCode';
import {
  Cell,
  CompleteRequest,
  CompletionError,
  Origin,
  ProjectFields,
  RecentChunk
} from '../client/wire';

const HINT_TOKENS = 24;
const MAX_PENDING_STREAMS = 32;

export interface DocumentContext {
  cells: Cell[];
  cell: number;
  language: string;
  policy: NotebookPolicy;
  /** Live objects in the notebook's kernel, as of its last execution. */
  facts?: string[];
  /** For the project context: the document's path, where the kernel says its names come
   * from, and the names the current cell held when the cursor entered it. */
  path?: string;
  origins?: Origin[];
  focus?: string[];
  recent?: RecentChunk[];
}

const MIME_LANGUAGES: Record<string, string> = {
  'text/x-python': 'python',
  'text/x-ipython': 'python',
  'text/x-rsrc': 'r',
  'text/x-julia': 'julia',
  'text/javascript': 'javascript',
  'text/typescript': 'typescript',
  'text/x-sh': 'bash',
  'text/x-sql': 'sql'
};

/** The cells (or the file) around the cursor, as the server's context builder wants them. */
export function describe(
  widget: unknown,
  request: CompletionHandler.IRequest
): DocumentContext | null {
  if (widget instanceof NotebookPanel) {
    const notebook = widget.content;
    const active = notebook.activeCell;
    if (!active || active.model.type !== 'code' || !widget.model) {
      return null;
    }
    const cell = notebook.activeCellIndex;
    return {
      cells: notebookCells(widget, { index: cell, source: request.text }),
      cell,
      language: notebookLanguage(widget),
      policy: notebookPolicy(widget),
      path: widget.context.localPath
    };
  }
  if (widget instanceof DocumentWidget && widget.content instanceof FileEditor) {
    const mime = widget.content.model.mimeType;
    const language = MIME_LANGUAGES[mime] ?? mime.replace(/^text\/(x-)?/, '');
    const path = widget.context.localPath;
    return {
      cells: [{ cell_type: 'code', source: request.text }],
      cell: 0,
      language,
      policy: {},
      path
    };
  }
  return {
    cells: [{ cell_type: 'code', source: request.text }],
    cell: 0,
    language: 'python',
    policy: {}
  };
}

export function cursorContext(
  text: string,
  offset: number,
  multiline: MultilinePolicy
): CursorContext {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  let lineEnd = text.indexOf('\n', offset);
  lineEnd = lineEnd < 0 ? text.length : lineEnd;
  return {
    lineBefore: text.slice(lineStart, offset),
    lineAfter: text.slice(offset, lineEnd),
    after: text.slice(offset),
    multiline
  };
}

export interface ProviderHooks {
  /** A suggestion finished (for the status bar). */
  onFinished(suggestion: Suggestion): void;
  onError(error: CompletionError): void;
}

/** Where the context header's parts come from, when this JupyterLab has them. */
export interface ProviderSources {
  /** The kernels' live facts and the names' origins (notebooks only). */
  kernelFacts?: KernelFacts | null;
  /** Code recently seen in other documents. */
  recentCode?: RecentCode | null;
}

/**
 * Our defaults for JupyterLab's per-provider inline-completer settings (Settings > Inline
 * Completer > Codestral provider); a user's own choice there wins. Fill-in-the-middle while
 * typing is the model's point, so it is on. The debounce is ours (it adapts to typing speed),
 * so JupyterLab's own delay defaults to 0 rather than adding to it.
 */
export const JUPYTERLAB_DEFAULTS = {
  autoFillInMiddle: true,
  debouncerDelay: 0
};

export class CodestralProvider implements IInlineCompletionProvider {
  readonly identifier = 'codestral';
  readonly name = 'Codestral';
  readonly schema = { default: JUPYTERLAB_DEFAULTS };
  private current: Settings = { ...DEFAULT_SETTINGS };
  /** JupyterLab's own debounce for this provider, from its inline-completer settings. */
  private hostDelayMs = 0;
  readonly source: SuggestionSource;
  private readonly session = `lab-${Math.random().toString(36).slice(2)}`;
  private tokens = new Map<string, { suggestion: Suggestion; typed: number }>();
  private nextToken = 0;
  private readonly kernelFacts: KernelFacts | null;
  private readonly recentCode: RecentCode | null;
  /** Per notebook, the active cell and the names it held when the cursor entered it. */
  private entered = new WeakMap<NotebookPanel, { cell: string; names: string[] }>();

  constructor(
    private readonly hooks: ProviderHooks,
    sources: ProviderSources = {}
  ) {
    this.kernelFacts = sources.kernelFacts ?? null;
    this.recentCode = sources.recentCode ?? null;
    this.source = new SuggestionSource({
      debounceMs: this.settings.debounceMs,
      streamer: (request, candidate, signal) =>
        streamCompletion(this.body(request, candidate), signal)
    });
  }

  /** Our own settings (Settings > Codestral), as last applied. */
  get settings(): Readonly<Settings> {
    return this.current;
  }

  /** Apply our own settings (Settings > Codestral). */
  applySettings(settings: Partial<Settings>): void {
    this.current = { ...this.current, ...settings };
    this.updateDebounce();
  }

  /**
   * JupyterLab hands us its inline-completer settings for this provider. When the user sets
   * its debouncer delay, that delay is the debounce and ours steps aside: the two never add up.
   */
  configure(settings: { [property: string]: unknown }): void {
    const delay = Number(settings?.debouncerDelay ?? 0);
    this.hostDelayMs = Number.isFinite(delay) && delay > 0 ? delay : 0;
    this.updateDebounce();
  }

  private updateDebounce(): void {
    this.source.setDebounce(this.hostDelayMs > 0 ? 0 : this.settings.debounceMs);
  }

  async fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    const document = this.describe(context.widget, request);
    if (!this.settings.enabled || !document || document.policy.enabled === false) {
      this.source.abort();
      return { items: [] };
    }
    if (this.settings.disabledLanguages.includes(document.language.toLowerCase())) {
      return { items: [] };
    }
    const hints = document.policy.mode === 'hints';
    const multiline = hints ? 'never' : this.settings.multiline;
    // The wire counts code points, as JupyterLab's completer hands them to providers
    // (Text.jsIndexToCharIndex); JavaScript slices UTF-16 units. Converted here and in warm().
    const at = Text.charIndexToJsIndex(request.offset, request.text);
    const shown = await this.source.fetch({
      before: request.text.slice(0, at),
      after: request.text.slice(at),
      cursor: cursorContext(request.text, at, multiline),
      candidates: hints ? 1 : Math.max(1, this.settings.candidates),
      payload: { document, offset: request.offset, hints }
    });
    if (!shown) {
      return { items: [] };
    }
    const items = shown.suggestions.map(suggestion => {
      const token = `${++this.nextToken}`;
      this.tokens.set(token, { suggestion, typed: shown.typed });
      if (this.tokens.size > MAX_PENDING_STREAMS) {
        // Items JupyterLab dropped before streaming them (a newer keystroke came first).
        this.tokens.delete(this.tokens.keys().next().value!);
      }
      this.watchErrors(suggestion);
      return {
        insertText: suggestion.text.slice(shown.typed),
        isIncomplete: true,
        token
      };
    });
    return { items };
  }

  async *stream(token: string): AsyncGenerator<{ response: IInlineCompletionItem }> {
    const entry = this.tokens.get(token);
    this.tokens.delete(token);
    if (!entry) {
      return;
    }
    for await (const text of entry.suggestion.watch(entry.typed)) {
      yield { response: { insertText: text } };
    }
  }

  /** The document around the cursor, with the kernel's facts and the names' origins when
   * they are on. */
  private describe(widget: unknown, request: CompletionHandler.IRequest): DocumentContext | null {
    const document = describe(widget, request);
    if (document && this.recentCode && this.settings.recentFiles) {
      document.recent = this.recentCode.chunksFor(document.path);
    }
    if (document && widget instanceof NotebookPanel) {
      if (this.kernelFacts && this.settings.kernelFacts) {
        document.facts = this.kernelFacts.get(widget);
      }
      if (this.kernelFacts && this.settings.projectContext) {
        document.origins = this.kernelFacts.originsOf(widget);
      }
      document.focus = this.namesOnEntry(widget, request.text);
    }
    return document;
  }

  /**
   * The names the active cell held when the cursor entered it: what the project context
   * ranks first. Fixed until the cursor moves to another cell, so typing never changes the
   * prompt's header (and the engine's prompt cache survives).
   */
  private namesOnEntry(panel: NotebookPanel, text: string): string[] {
    const cell = panel.content.activeCell?.model.id ?? '';
    const last = this.entered.get(panel);
    if (last?.cell === cell) {
      return last.names;
    }
    const names = namesToProbe([], text);
    this.entered.set(panel, { cell, names });
    return names;
  }

  /** The project-context fields of a request. */
  private projectFields(document: DocumentContext): ProjectFields {
    return {
      path: document.path ?? null,
      project: this.settings.projectContext,
      origins: document.origins ?? [],
      focus: document.focus ?? [],
      recent: document.recent ?? []
    };
  }

  /** What is left of the suggestion the user sees (for accept word / line). */
  visibleSuggestion(before: string): string | null {
    const active = this.source.active;
    if (!active || !before.startsWith(active.before)) {
      return null;
    }
    const typed = before.slice(active.before.length);
    return active.text.startsWith(typed) ? active.text.slice(typed.length) : null;
  }

  private reported = new WeakSet<Suggestion>();

  private async watchErrors(suggestion: Suggestion): Promise<void> {
    if (this.reported.has(suggestion)) {
      return;
    }
    this.reported.add(suggestion);
    for await (const _ of suggestion.watch(0)) {
      // wait for the end
    }
    if (suggestion.error) {
      this.hooks.onError(suggestion.error);
    } else if (!suggestion.superseded) {
      this.hooks.onFinished(suggestion);
    }
  }

  private body(request: CompletionRequest, candidate: number): CompleteRequest {
    const { document, offset, hints } = request.payload as {
      document: DocumentContext;
      offset: number;
      hints: boolean;
    };
    const s = this.settings;
    const sampled = candidate > 0;
    return {
      cells: document.cells,
      cell: document.cell,
      cursor: offset,
      language: document.language,
      max_tokens: hints ? HINT_TOKENS : s.maxTokens,
      temperature: sampled ? Math.max(s.temperature, 0.7) : s.temperature,
      seed: sampled ? candidate : undefined,
      // Where only one line will be shown, the engine stops at the line break itself.
      multiline: allowsBlock(request.cursor),
      time_budget_ms: s.timeBudgetMs,
      context_tokens: s.contextTokens,
      session: `${this.session}-${candidate}`,
      facts: document.facts ?? [],
      ...this.projectFields(document)
    };
  }

  /**
   * Prefill a cell's context into the engine's prompt cache (a one-token request). `index` is
   * the editor's cursor, in UTF-16 units.
   */
  async warm(widget: NotebookPanel, text: string, index: number): Promise<void> {
    const offset = Text.jsIndexToCharIndex(index, text);
    const request = { text, offset } as CompletionHandler.IRequest;
    const document = this.describe(widget, request);
    if (!this.settings.enabled || !document || document.policy.enabled === false) {
      return;
    }
    const body: CompleteRequest = {
      cells: document.cells,
      cell: document.cell,
      cursor: offset,
      language: document.language,
      context_tokens: this.settings.contextTokens,
      warm: true,
      // The same header as the typed requests: one cached prefix.
      facts: document.facts ?? [],
      ...this.projectFields(document)
    };
    try {
      for await (const _ of streamCompletion(body, new AbortController().signal)) {
        // drain
      }
    } catch {
      // warming is best effort; a real request reports errors
    }
  }
}
