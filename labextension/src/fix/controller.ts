/** The notebooks' fix machinery, made once: the switches and policy, the error outputs on
 * screen, the requests, the diff's syntax colours. Every error output's action shares it. */

import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Extension } from '@codemirror/state';

import { KernelFacts } from '../context/kernelFacts';
import { notebookLanguage } from '../context/notebookDocument';
import { Settings } from '../settings';
import { ErrorOutputs } from './cells';
import { FixableError, fixableErrorFactory, FixHost } from './errorOutput';
import { FixSwitches } from './policy';
import { FixRequests } from './request';

export class FixController implements FixHost {
  readonly switches = new FixSwitches();
  readonly outputs: ErrorOutputs<FixableError>;
  readonly requests: FixRequests;

  constructor(
    notebooks: INotebookTracker,
    private readonly languages: IEditorLanguageRegistry | null,
    kernelFacts: KernelFacts | null
  ) {
    this.outputs = new ErrorOutputs(notebooks);
    this.requests = new FixRequests(kernelFacts);
  }

  /** The fix's settings: the action on or off, and the context its request carries. */
  applySettings(settings: Settings): void {
    this.requests.applySettings(settings);
    this.switches.setEnabled(settings.fixAction);
  }

  rendererFactory(): IRenderMime.IRendererFactory {
    return fixableErrorFactory(this);
  }

  /** Syntax colours for the diff, from JupyterLab's language registry. */
  async language(panel: NotebookPanel): Promise<Extension | null> {
    const language = await this.languages?.getLanguage(notebookLanguage(panel)).catch(() => null);
    return language?.support ?? null;
  }
}
