/**
 * "Fix with Codestral" at a traceback: a renderer for notebook error outputs (the traceback as
 * JupyterLab shows it, then the action), the policy that shows or hides the action, and the
 * request it streams. Accept replaces the cell's source in one undoable step.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import type { Cell as CellWidget } from '@jupyterlab/cells';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import * as nbformat from '@jupyterlab/nbformat';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { RenderedError } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Signal } from '@lumino/signaling';
import { PanelLayout, Widget } from '@lumino/widgets';
import { Extension } from '@codemirror/state';

import { getStatus, streamFix } from '../client/api';
import { CommandIDs, NO_ARGS } from '../ids';
import { FixMode, FixProposal, minimalEdit, readProposal } from './proposal';
import { FixPanel } from './fixPanel';
import { KernelFacts } from '../context/kernelFacts';
import { notebookCells, notebookLanguage, notebookPolicy } from '../context/notebookDocument';

/** How a notebook error output reaches renderers (nbformat's error, whole). */
export const ERROR_MIME = 'application/vnd.jupyter.error';
/** Below the stderr renderer's 110: error outputs come here first. */
export const ERROR_RANK = 100;
const ENGINE_POLL_MS = 1000;
// Within lab_wire.ErrorOutput's limits; the server keeps the user's frames of what is sent.
const MAX_TRACEBACK_ENTRIES = 200;
const MAX_ERROR_CHARS = 2000;
const MAX_ENTRY_CHARS = 20000;

export interface FixPolicy {
  allowed: boolean;
  mode: FixMode;
}

interface CellRef {
  panel: NotebookPanel;
  cell: CellWidget;
  index: number;
}

/** What every error output's action shares: settings, policy, the notebooks. */
export class FixController {
  /** The policy may have changed (a setting, the server's answer). */
  readonly changed = new Signal<FixController, void>(this);
  private readonly live = new Set<FixableError>();
  private settingEnabled = true;
  private serverEnabled = true;
  kernelFacts: KernelFacts | null = null;
  useKernelFacts = true;
  useProjectContext = true;
  contextTokens: number | null = null;

  constructor(
    private readonly notebooks: INotebookTracker,
    private readonly languages: IEditorLanguageRegistry | null
  ) {
    void getStatus()
      .then(status => this.setServerEnabled(status.settings?.enabled !== false))
      .catch(() => undefined); // the status bar reports an unreachable server
  }

  setEnabled(enabled: boolean): void {
    this.settingEnabled = enabled;
    this.changed.emit();
  }

  setServerEnabled(enabled: boolean): void {
    this.serverEnabled = enabled;
    this.changed.emit();
  }

  /** Off where completions are off (the server, the notebook's metadata) or the setting is;
   * explain instead of fix in the teaching hints mode. */
  policy(panel: NotebookPanel): FixPolicy {
    const notebook = notebookPolicy(panel);
    return {
      allowed: this.settingEnabled && this.serverEnabled && notebook.enabled !== false,
      mode: notebook.mode === 'hints' ? 'explain' : 'fix'
    };
  }

  rendererFactory(): IRenderMime.IRendererFactory {
    return {
      safe: true,
      mimeTypes: [ERROR_MIME],
      defaultRank: ERROR_RANK,
      createRenderer: options => new FixableError(options, this)
    };
  }

  /** The error output (with its action) of a cell, if it has one on screen. */
  errorOf(cell: CellWidget): FixableError | null {
    return [...this.live].find(output => cell.node.contains(output.node)) ?? null;
  }

  /** The notebook cell holding `node`, if any (an output view or a console holds none). */
  cellOf(node: HTMLElement): CellRef | null {
    let found: CellRef | null = null;
    this.notebooks.forEach(panel => {
      const index = found ? -1 : panel.content.widgets.findIndex(c => c.node.contains(node));
      if (index >= 0) {
        found = { panel, cell: panel.content.widgets[index], index };
      }
    });
    return found;
  }

  track(output: FixableError, on: boolean): void {
    if (on) {
      this.live.add(output);
    } else {
      this.live.delete(output);
    }
  }

  /** Syntax colours for the diff, from JupyterLab's language registry. */
  async language(panel: NotebookPanel): Promise<Extension | null> {
    const language = await this.languages?.getLanguage(notebookLanguage(panel)).catch(() => null);
    return language?.support ?? null;
  }

  /** The request for the fix. No engine session: a new fix in its place is cancelled by
   * this side (its abort), never by the engine superseding it mid-answer. */
  stream(ref: CellRef, error: nbformat.IError, mode: FixMode, signal: AbortSignal) {
    const facts = this.useKernelFacts && this.kernelFacts ? this.kernelFacts.get(ref.panel) : [];
    const project = this.useProjectContext;
    return streamFix(
      {
        cells: notebookCells(ref.panel),
        cell: ref.index,
        error: boundedError(error),
        language: notebookLanguage(ref.panel),
        mode,
        context_tokens: this.contextTokens,
        facts,
        path: ref.panel.context.localPath,
        project,
        origins: project && this.kernelFacts ? this.kernelFacts.originsOf(ref.panel) : []
      },
      signal
    );
  }
}

/** A notebook error output: the traceback as JupyterLab renders it, then "Fix with Codestral"
 * (or, in the hints mode, "Explain"), and the proposal under it once asked for. */
export class FixableError extends Widget implements IRenderMime.IRenderer {
  private readonly traceback: RenderedError;
  private readonly bar = document.createElement('div');
  private readonly action = document.createElement('button');
  private readonly note = document.createElement('span');
  private error: nbformat.IError | null = null;
  private ref: CellRef | null = null;
  private panel: FixPanel | null = null;
  private abort: AbortController | null = null;

  constructor(
    options: IRenderMime.IRendererOptions,
    private readonly controller: FixController
  ) {
    super();
    this.addClass('jp-codestral-FixableError');
    const layout = (this.layout = new PanelLayout());
    this.traceback = new RenderedError({ ...options, mimeType: 'application/vnd.jupyter.stderr' });
    layout.addWidget(this.traceback);
    this.bar.className = 'jp-codestral-FixBar';
    this.action.className = 'jp-Button jp-mod-styled jp-mod-accept jp-codestral-FixButton';
    this.action.addEventListener('click', () => void this.start());
    this.note.className = 'jp-codestral-FixBar-note';
    this.bar.append(this.action, this.note);
    this.bar.hidden = true; // until attached inside a notebook cell that allows it
    this.node.append(this.bar);
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this.error = model.data[ERROR_MIME] as unknown as nbformat.IError;
    await this.traceback.renderModel(model);
  }

  /** Ask for the fix (again): cancels a proposal still streaming. */
  async start(): Promise<void> {
    const ref = this.controller.cellOf(this.node);
    if (!ref || !this.error) {
      return;
    }
    const policy = this.controller.policy(ref.panel);
    if (!policy.allowed) {
      return;
    }
    this.close();
    const abort = (this.abort = new AbortController());
    const proposal = new FixProposal(ref.cell.model.sharedModel.getSource(), policy.mode);
    const language = policy.mode === 'fix' ? await this.controller.language(ref.panel) : null;
    if (abort.signal.aborted) {
      return; // closed while the language loaded
    }
    const panel = (this.panel = new FixPanel(
      proposal,
      {
        accept: text => this.accept(ref, text),
        stop: () => this.stop(),
        close: () => this.close()
      },
      language
    ));
    this.note.textContent = '';
    this.node.append(panel.node);
    let at: CellRef | null = ref;
    for (;;) {
      await readProposal(
        proposal,
        this.controller.stream(at, this.error, policy.mode, abort.signal),
        () => panel.update()
      );
      if (proposal.error?.kind !== 'engine_starting' || abort.signal.aborted) {
        break;
      }
      proposal.waitForEngine();
      panel.update();
      const ready = await engineReady(abort.signal);
      if (abort.signal.aborted) {
        break;
      }
      at = this.controller.cellOf(this.node); // cells may have moved while it loaded
      if (!ready) {
        proposal.fail({
          kind: 'engine_error',
          message: 'the engine failed to load.',
          fix: 'Click the Codestral status bar item for why.'
        });
      } else if (!at || at.cell.model.sharedModel.getSource() !== proposal.original) {
        proposal.fail({
          kind: 'changed',
          message: 'the cell changed while the engine loaded.',
          fix: 'Ask again.'
        });
      }
      if (proposal.state !== 'streaming' || !at) {
        panel.update();
        break;
      }
    }
    if (proposal.error?.kind === 'disabled') {
      this.controller.setServerEnabled(false);
    }
    if (this.abort === abort) {
      this.abort = null;
    }
  }

  /** Replace the cell's source with `text`, as one undo step of the cell's editor. */
  private accept(ref: CellRef, text: string): void {
    const shared = ref.cell.model.sharedModel;
    if (shared.getSource() !== this.panel?.proposal.original) {
      // Edited since the fix was asked for: the diff no longer says what Accept would do.
      this.panel?.proposal.fail({
        kind: 'changed',
        message: 'the cell changed since this fix was proposed.',
        fix: 'Ask again for a fix of the cell as it is now.'
      });
      this.panel?.update();
      return;
    }
    const undo = (shared as { undoManager?: { stopCapturing(): void } | null }).undoManager;
    const edit = minimalEdit(shared.getSource(), text);
    undo?.stopCapturing(); // not merged with the typing just before
    shared.updateSource(edit.from, edit.to, edit.insert);
    undo?.stopCapturing();
    this.close();
    this.note.textContent =
      'Fix applied: run the cell to check it; undo in the cell (Ctrl+Z, or Cmd+Z on a Mac) restores it.';
  }

  private stop(): void {
    this.panel?.proposal.stop();
    this.abort?.abort();
    this.abort = null;
    this.panel?.update();
  }

  close(): void {
    this.stop();
    this.panel?.dispose();
    this.panel = null;
  }

  /** Show or hide the action as the policy says now. */
  updatePolicy(): void {
    if (!this.ref) {
      this.bar.hidden = true;
      return;
    }
    const policy = this.controller.policy(this.ref.panel);
    this.bar.hidden = !policy.allowed;
    this.action.textContent =
      policy.mode === 'fix' ? 'Fix with Codestral' : 'Explain with Codestral';
    this.action.title = `${
      policy.mode === 'fix' ? 'Propose a corrected cell, as a diff' : 'Explain this error briefly'
    } (Alt+Shift+F)`;
    if (!policy.allowed && this.panel?.proposal.state === 'streaming') {
      this.close(); // turned off meanwhile: stop asking (a finished panel stays readable)
    }
  }

  protected onAfterAttach(): void {
    this.ref = this.controller.cellOf(this.node);
    this.controller.track(this, true);
    this.controller.changed.connect(this.updatePolicy, this);
    this.ref?.panel.model?.metadataChanged.connect(this.updatePolicy, this);
    this.updatePolicy();
  }

  protected onBeforeDetach(): void {
    this.controller.track(this, false);
    this.controller.changed.disconnect(this.updatePolicy, this);
    this.ref?.panel.model?.metadataChanged.disconnect(this.updatePolicy, this);
    this.ref = null;
  }

  dispose(): void {
    if (!this.isDisposed) {
      this.close();
    }
    super.dispose();
  }
}

/** The command (Alt+Shift+F, and the palette): the action of the active cell's error. */
export function addFixCommand(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker,
  controller: FixController,
  palette: ICommandPalette | null
): void {
  const target = () => {
    const cell = notebooks.activeCell;
    const panel = notebooks.currentWidget;
    return cell && panel ? { output: controller.errorOf(cell), panel } : null;
  };
  app.commands.addCommand(CommandIDs.fixCell, {
    describedBy: NO_ARGS,
    label: () => {
      const found = target();
      const explain = found && controller.policy(found.panel).mode === 'explain';
      return explain
        ? 'Codestral: Explain the Error in This Cell'
        : 'Codestral: Fix the Error in This Cell';
    },
    caption: () => {
      const found = target();
      return found && controller.policy(found.panel).mode === 'explain'
        ? "Explains the error in a sentence or two, under the cell's traceback"
        : "Streams a corrected cell as a diff under the cell's traceback";
    },
    isEnabled: () => {
      const found = target();
      return !!found && controller.policy(found.panel).allowed;
    },
    execute: () => {
      const found = target();
      if (!found?.output) {
        Notification.info('Codestral: this cell has no error to fix. Run it first.', {
          autoClose: 5000
        });
        return;
      }
      void found.output.start();
    }
  });
  palette?.addItem({ command: CommandIDs.fixCell, category: 'Codestral' });
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

/** Wait for the engine to finish loading; false if it failed or the wait was cancelled. */
async function engineReady(signal: AbortSignal): Promise<boolean> {
  while (!signal.aborted) {
    await new Promise(resolve => setTimeout(resolve, ENGINE_POLL_MS));
    const state = (await getStatus().catch(() => ({ state: 'error' }))).state;
    if (state === 'ready') {
      return true;
    }
    if (state === 'error') {
      return false;
    }
  }
  return false;
}
