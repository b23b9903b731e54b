/**
 * Live facts about the kernel's objects for the ghost text's context (DataFrame columns,
 * array shapes, ...), and where the notebook's names come from (the file and qualified name
 * of each function, class or module the project defines: the project context reads their
 * signatures on the server). After an execution, once the kernel is idle, the kernel is asked once:
 * the server's probe (`jupyter_codestral/context/kernel_facts.py`) runs as a silent request without
 * history and answers through a user expression. Never while a cell runs, never per keystroke;
 * the facts stay the same until the next execution, so the prompt's header (and the engine's
 * prompt cache) does not change while the user types.
 */

import { Kernel } from '@jupyterlab/services';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import { getProbe, Probe } from '../client/api';
import { namesToProbe } from './probeNames';
import { Origin } from '../client/wire';
import { Settings } from '../settings';

/** After an execution ends, wait this long for the kernel to stay idle (Run All goes on). */
const SETTLE_MS = 150;

export class KernelFacts {
  /** Describe the live objects (the kernel-facts setting). */
  private describeObjects = true;
  /** Ask where names come from (the project-context setting). */
  private traceOrigins = true;
  private facts = new WeakMap<NotebookPanel, string[]>();
  private origins = new WeakMap<NotebookPanel, Origin[]>();
  private waiting = new WeakSet<NotebookPanel>();
  private watched = new WeakSet<NotebookPanel>();
  private probe: Promise<Probe> | null = null;

  constructor(private readonly notebooks: INotebookTracker) {
    NotebookActions.executed.connect((_, { notebook, cell }) => {
      const panel = this.notebooks.find(p => p.content === notebook);
      if (panel && (this.describeObjects || this.traceOrigins)) {
        this.schedule(panel, cell.model.sharedModel.getSource());
      }
    });
  }

  /** What to ask the kernel for: the kernel-facts and project-context settings. */
  applySettings(settings: Pick<Settings, 'kernelFacts' | 'projectContext'>): void {
    this.describeObjects = settings.kernelFacts;
    this.traceOrigins = settings.projectContext;
  }

  /** The facts for a notebook's prompt: as of its last probe. */
  get(panel: NotebookPanel): string[] {
    return this.describeObjects ? (this.facts.get(panel) ?? []) : [];
  }

  /** Where the notebook's names come from: as of its last probe. */
  originsOf(panel: NotebookPanel): Origin[] {
    return this.traceOrigins ? (this.origins.get(panel) ?? []) : [];
  }

  private schedule(panel: NotebookPanel, executed: string): void {
    const kernel = panel.sessionContext.session?.kernel;
    if (!kernel || this.waiting.has(panel)) {
      return;
    }
    this.forgetOnRestart(panel);
    this.waiting.add(panel);
    const attempt = () => {
      setTimeout(() => {
        if (kernel.isDisposed || panel.isDisposed) {
          this.waiting.delete(panel);
        } else if (kernel.status === 'idle') {
          this.waiting.delete(panel);
          void this.ask(panel, kernel, executed);
        } else {
          // Busy (a queued cell runs): ask when it is idle again, not behind it.
          const onStatus = (_: Kernel.IKernelConnection, status: Kernel.Status) => {
            if (status === 'idle' || status === 'dead') {
              kernel.statusChanged.disconnect(onStatus);
              kernel.disposed.disconnect(onGone);
              attempt();
            }
          };
          // Shut down or changed while a cell ran: stop waiting (a later run asks again).
          const onGone = () => {
            kernel.statusChanged.disconnect(onStatus);
            this.waiting.delete(panel);
          };
          kernel.statusChanged.connect(onStatus);
          kernel.disposed.connect(onGone);
        }
      }, SETTLE_MS);
    };
    attempt();
  }

  /** A restarted or changed kernel has none of the objects described: drop the facts. */
  private forgetOnRestart(panel: NotebookPanel): void {
    if (this.watched.has(panel)) {
      return;
    }
    this.watched.add(panel);
    const forget = () => {
      this.facts.delete(panel);
      this.origins.delete(panel);
    };
    panel.sessionContext.kernelChanged.connect(forget);
    panel.sessionContext.statusChanged.connect((_, status) => {
      if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
        forget();
      }
    });
  }

  private async ask(
    panel: NotebookPanel,
    kernel: Kernel.IKernelConnection,
    executed: string
  ): Promise<void> {
    try {
      const info = await kernel.info;
      if (info.language_info.name !== 'python') {
        return; // the probe is Python; other kernels get no header
      }
      this.probe ??= getProbe();
      const probe = await this.probe;
      const sources = panel.content.widgets
        .filter(cell => cell.model.type === 'code')
        .map(cell => cell.model.sharedModel.getSource());
      const names = JSON.stringify(namesToProbe(sources, executed));
      // Only what the settings ask for: with kernel facts off, no object is described.
      const expressions: Record<string, string> = {};
      if (this.describeObjects) {
        expressions.codestral = probe.expression.replace('NAMES', names);
      }
      if (this.traceOrigins) {
        expressions.codestral_origins = probe.origins.replace('NAMES', names);
      }
      const future = kernel.requestExecute({
        code: probe.setup,
        silent: true,
        store_history: false,
        allow_stdin: false,
        stop_on_error: false,
        user_expressions: expressions
      });
      const reply = await future.done;
      const answers = (reply.content as any).user_expressions ?? {};
      const facts = parseAnswer(answers.codestral);
      this.facts.set(
        panel,
        facts.filter(f => typeof f === 'string')
      );
      const origins = parseAnswer(answers.codestral_origins)
        .filter(o => Array.isArray(o) && o.length === 3 && o.every(p => typeof p === 'string'))
        .map(([name, file, qualname]) => ({ name, file, qualname }));
      this.origins.set(panel, origins);
    } catch {
      // a kernel that went away or answered oddly: the header is just absent
    }
  }
}

/** A user expression's JSON list, or [] when it failed or answered oddly. */
function parseAnswer(answer: any): any[] {
  if (answer?.status !== 'ok') {
    return [];
  }
  try {
    const value = JSON.parse(answer.data['text/plain']);
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}
