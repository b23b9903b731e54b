/** The fix's request: the notebook, the error within the route's limits, and the context header
 * (kernel facts, the project's code) as the settings allow. */

import * as nbformat from '@jupyterlab/nbformat';

import { streamFix } from '../client/api';
import { StreamEvent } from '../client/wire';
import { KernelFacts } from '../context/kernelFacts';
import { notebookCells, notebookLanguage } from '../context/notebookDocument';
import { Settings } from '../settings';
import { CellRef } from './cells';
import { FixMode } from './proposal';

// Within lab/wire.py's ErrorOutput limits; the server keeps the user's frames of what is sent.
const MAX_TRACEBACK_ENTRIES = 200;
const MAX_ERROR_CHARS = 2000;
const MAX_ENTRY_CHARS = 20000;

/** What the request takes from the settings. */
export type FixSettings = Pick<Settings, 'kernelFacts' | 'projectContext' | 'contextTokens'>;

export class FixRequests {
  private settings: FixSettings | null = null;

  constructor(private readonly kernelFacts: KernelFacts | null) {}

  applySettings(settings: FixSettings): void {
    this.settings = { ...settings };
  }

  /** The request for the fix. No engine session: a new fix in its place is cancelled by
   * this side (its abort), never by the engine superseding it mid-answer. */
  stream(
    ref: CellRef,
    error: nbformat.IError,
    mode: FixMode,
    signal: AbortSignal
  ): AsyncIterable<StreamEvent> {
    // Before the settings are read: the header on, the server's own context budget.
    const useFacts = this.settings?.kernelFacts ?? true;
    const project = this.settings?.projectContext ?? true;
    const facts = useFacts && this.kernelFacts ? this.kernelFacts.get(ref.panel) : [];
    return streamFix(
      {
        cells: notebookCells(ref.panel),
        cell: ref.index,
        error: boundedError(error),
        language: notebookLanguage(ref.panel),
        mode,
        context_tokens: this.settings?.contextTokens ?? null,
        facts,
        path: ref.panel.context.localPath,
        project,
        origins: project && this.kernelFacts ? this.kernelFacts.originsOf(ref.panel) : []
      },
      signal
    );
  }
}

/** An error output within the route's limits: a deep recursion's traceback, a huge message. */
function boundedError(error: nbformat.IError) {
  const traceback = error.traceback ?? [];
  const kept =
    traceback.length > MAX_TRACEBACK_ENTRIES
      ? [...traceback.slice(0, 2), ...traceback.slice(-(MAX_TRACEBACK_ENTRIES - 2))]
      : traceback;
  return {
    ename: error.ename.slice(0, MAX_ERROR_CHARS),
    evalue: error.evalue.slice(0, MAX_ERROR_CHARS),
    traceback: kept.map(entry => entry.slice(-MAX_ENTRY_CHARS))
  };
}
