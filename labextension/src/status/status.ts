/** The status bar item: engine state, then the last suggestion's speed and cache use. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { getStatus } from '../client/api';
import { LabStatus } from '../client/wire';
import { DEMO_NOTE, isDemoModel, statusRows } from './statusDetails';
import { Suggestion } from '../completion/suggestions';

const POLL_BUSY_MS = 1000;
const POLL_IDLE_MS = 15000;

export class StatusItem extends Widget {
  private status: Partial<LabStatus> = {};
  private last: Suggestion | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private enabled = true;

  constructor() {
    super();
    this.addClass('jp-codestral-status');
    this.node.title = 'Codestral: click for details';
    this.node.addEventListener('click', () => void this.showDetails());
    this.render();
  }

  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
    this.render();
  }

  /** Poll the engine's status now and then again, faster while it is loading. */
  async refresh(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    try {
      this.status = await getStatus();
    } catch (error) {
      this.status = { state: 'error', error: String(error) };
    }
    this.render();
    const busy = ['starting', 'loading'].includes(this.status.state ?? '');
    this.timer = setTimeout(() => void this.refresh(), busy ? POLL_BUSY_MS : POLL_IDLE_MS);
  }

  finished(suggestion: Suggestion): void {
    this.last = suggestion;
    if (this.status.state !== 'ready') {
      void this.refresh();
    }
    this.render();
  }

  dispose(): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    super.dispose();
  }

  text(): string {
    if (!this.enabled || this.status.enabled === false) {
      return 'Codestral: off';
    }
    const state = this.status.state ?? 'connecting';
    if (state === 'starting') {
      return 'Codestral: starting…'; // the engine process, before it reports load progress
    }
    if (state === 'loading') {
      const progress = Math.round((this.status.progress ?? 0) * 100);
      return `Codestral: loading ${progress}%`;
    }
    if (state === 'error') {
      return 'Codestral: error';
    }
    if (state === 'not_responding') {
      return 'Codestral: not responding';
    }
    if (state === 'stopped') {
      // Not started yet, or exited when idle: it starts on the next request.
      return 'Codestral: unloaded';
    }
    if (state !== 'ready') {
      return `Codestral: ${state}`;
    }
    const usage = this.last?.timing.usage;
    if (!usage) {
      // Ended on our side (post-processing had all it needed): the browser's own timing.
      const first = this.last?.timing.firstTextMs;
      return first !== null && first !== undefined
        ? `Codestral · ${Math.round(first)} ms to text`
        : 'Codestral: ready';
    }
    const ttft = usage.time_to_first_token_s;
    const rate = usage.decode_tokens_per_s;
    // Only a server that reports its prompt cache (ours; vLLM when configured to) says "cached".
    const cached = usage.cached_prompt_tokens;
    const parts = ['Codestral'];
    if (ttft !== null && ttft !== undefined) {
      parts.push(`${Math.round(ttft * 1000)} ms`);
    }
    if (rate) {
      parts.push(`${rate.toFixed(0)} tok/s`);
    }
    if (typeof cached === 'number') {
      parts.push(`${cached}/${usage.prompt_tokens ?? 0} cached`);
    }
    return parts.join(' · ');
  }

  private render(): void {
    const demo = isDemoModel(this.status.model);
    const note = demo && this.status.state === 'ready' ? ' · demo model (random weights)' : '';
    this.node.textContent = this.text() + note;
    this.node.title = demo ? `Codestral: ${DEMO_NOTE}` : 'Codestral: click for details';
  }

  private async showDetails(): Promise<void> {
    await this.refresh();
    const last = this.last ? this.last.timing : null;
    const table = document.createElement('table');
    table.className = 'jp-codestral-details';
    for (const [label, value] of statusRows(this.status, last)) {
      const row = table.insertRow();
      const head = document.createElement('th');
      head.textContent = label;
      row.appendChild(head);
      row.insertCell().textContent = value;
    }
    const body = new Widget({ node: table });
    await showDialog({ title: 'Codestral', body, buttons: [Dialog.okButton()] });
  }
}
