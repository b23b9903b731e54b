/** Whether "Fix with Codestral" is offered in a notebook, and as what. */

import { NotebookPanel } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';

import { getStatus } from '../client/api';
import { notebookPolicy } from '../context/notebookDocument';
import { FixMode } from './proposal';

export interface FixPolicy {
  allowed: boolean;
  mode: FixMode;
}

/** The two switches over the action (the setting, the server's) and the policy they make. */
export class FixSwitches {
  /** The policy may have changed (a setting, the server's answer). */
  readonly changed = new Signal<FixSwitches, void>(this);
  private settingEnabled = true;
  private serverEnabled = true;

  constructor() {
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
}
