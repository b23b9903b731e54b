/**
 * A notebook error output with "Fix with Codestral": the traceback as JupyterLab shows it,
 * then the action, and the proposal under it once asked for. Accept replaces the cell's source
 * in one undoable step.
 */

import * as nbformat from '@jupyterlab/nbformat';
import { NotebookPanel } from '@jupyterlab/notebook';
import { RenderedError } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { PanelLayout, Widget } from '@lumino/widgets';
import { Extension } from '@codemirror/state';

import { CellRef, ErrorOutputs } from './cells';
import { FixPanel } from './fixPanel';
import { FixSwitches } from './policy';
import { FixProposal, minimalEdit } from './proposal';
import { FixRequests } from './request';
import { runFix } from './run';

/** How a notebook error output reaches renderers (nbformat's error, whole). */
export const ERROR_MIME = 'application/vnd.jupyter.error';
/** Below the stderr renderer's 110: error outputs come here first. */
export const ERROR_RANK = 100;

/** What an error output's action asks of the notebooks' fix machinery. */
export interface FixHost {
  readonly switches: FixSwitches;
  readonly outputs: ErrorOutputs<FixableError>;
  readonly requests: FixRequests;
  /** Syntax colours for the diff. */
  language(panel: NotebookPanel): Promise<Extension | null>;
}

/** Renders every notebook error output as a `FixableError`. */
export function fixableErrorFactory(host: FixHost): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [ERROR_MIME],
    defaultRank: ERROR_RANK,
    createRenderer: options => new FixableError(options, host)
  };
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
    private readonly host: FixHost
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
    const ref = this.host.outputs.cellOf(this.node);
    const error = this.error;
    if (!ref || !error) {
      return;
    }
    const policy = this.host.switches.policy(ref.panel);
    if (!policy.allowed) {
      return;
    }
    this.close();
    const abort = (this.abort = new AbortController());
    const proposal = new FixProposal(ref.cell.model.sharedModel.getSource(), policy.mode);
    const language = policy.mode === 'fix' ? await this.host.language(ref.panel) : null;
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
    await runFix({
      proposal,
      ref,
      signal: abort.signal,
      request: at => this.host.requests.stream(at, error, policy.mode, abort.signal),
      locate: () => this.host.outputs.cellOf(this.node),
      changed: () => panel.update()
    });
    if (proposal.error?.kind === 'disabled') {
      this.host.switches.setServerEnabled(false);
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
    const policy = this.host.switches.policy(this.ref.panel);
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
    this.ref = this.host.outputs.cellOf(this.node);
    this.host.outputs.track(this, true);
    this.host.switches.changed.connect(this.updatePolicy, this);
    this.ref?.panel.model?.metadataChanged.connect(this.updatePolicy, this);
    this.updatePolicy();
  }

  protected onBeforeDetach(): void {
    this.host.outputs.track(this, false);
    this.host.switches.changed.disconnect(this.updatePolicy, this);
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
