/**
 * A fix at a traceback, free of JupyterLab so it can be unit-tested: the proposal as it streams
 * from `POST codestral/fix`, whether it can be accepted, and the one edit that applies it.
 */

import { CompletionError, ErrorInfo, StreamEvent } from '../client/wire';

export type FixMode = 'fix' | 'explain';
export type FixState = 'streaming' | 'done' | 'stopped' | 'failed';

/** One proposal (or, in the hints mode, one explanation) for a failed cell. */
export class FixProposal {
  /** What the server sent so far (fences already dropped there). */
  raw = '';
  state: FixState = 'streaming';
  finishReason: string | null = null;
  error: ErrorInfo | null = null;
  /** Waiting for the engine to load before asking (again). */
  waiting = false;

  constructor(
    /** The cell's source when the fix was asked for. */
    readonly original: string,
    readonly mode: FixMode
  ) {}

  /** Feed one event; returns false once the proposal is complete. */
  push(event: StreamEvent): boolean {
    if (this.state !== 'streaming') {
      return false;
    }
    this.waiting = false;
    if (event.type === 'delta') {
      this.raw += event.text;
    } else if (event.type === 'done') {
      if (event.finish_reason === 'cancelled' || event.finish_reason === 'error') {
        // The engine ended it early (a restart, another request in its place): not whole.
        this.fail({
          kind: 'cancelled',
          message: 'the engine stopped the request early.',
          fix: 'Ask again.'
        });
      } else {
        this.finishReason = event.finish_reason;
        this.state = 'done';
      }
    } else if (event.type === 'error') {
      this.fail(event.error);
    }
    return this.state === 'streaming';
  }

  fail(error: ErrorInfo): void {
    this.error = error;
    this.state = 'failed';
  }

  /** The engine is still loading: wait, then ask again from the start. */
  waitForEngine(): void {
    Object.assign(this, { raw: '', state: 'streaming', error: null, waiting: true });
  }

  stop(): void {
    if (this.state === 'streaming') {
      this.state = 'stopped';
    }
  }

  /** The proposed cell as shown and applied: its line ends as the cell's own. */
  get text(): string {
    if (this.mode === 'explain') {
      return this.raw.trim();
    }
    const trailing = /\n*$/.exec(this.original)![0];
    return this.raw.replace(/^\n+/, '').replace(/\s+$/, '') + trailing;
  }

  /** What the proposal is compared with: until it is whole, as many of the cell's lines as
   * it has (so lines it has not reached yet do not show as deleted), then the whole cell. */
  get compared(): string {
    if (this.state === 'done') {
      return this.original;
    }
    const body = this.original.replace(/\n+$/, '');
    const lines = this.text.replace(/\n+$/, '').split('\n').length;
    return body.split('\n').slice(0, lines).join('\n') + this.original.slice(body.length);
  }

  /** Finished (not stopped, not failed), not empty, and different from the cell. One cut at
   * the token limit can be accepted too: the diff shows what it drops, the header says so,
   * and undo restores the cell (as `%codestral fix --replace` takes it). */
  get acceptable(): boolean {
    return (
      this.mode === 'fix' &&
      this.state === 'done' &&
      this.text.trim() !== '' &&
      this.text !== this.original
    );
  }

  /** Ended at the token limit rather than where the model chose to. */
  get cutOff(): boolean {
    return this.state === 'done' && this.finishReason === 'length';
  }

  /** A line for the panel's header. */
  get summary(): string {
    switch (this.state) {
      case 'streaming':
        if (this.waiting) {
          return 'waiting for the engine to load (the status bar shows its progress)…';
        }
        return this.mode === 'fix' ? 'proposing a fix…' : 'explaining…';
      case 'stopped':
        return 'stopped';
      case 'failed':
        return `could not ${this.mode}: ${this.error?.message ?? 'unknown error'}${
          this.error?.fix ? ` ${this.error.fix}` : ''
        }`;
      case 'done':
        if (this.mode === 'explain') {
          return 'why the cell failed';
        }
        if (!this.acceptable) {
          return 'no change proposed';
        }
        return this.cutOff
          ? 'proposed fix, cut off at its token limit: check the end of the diff before accepting'
          : 'proposed fix';
    }
  }
}

/** Read a fix's event stream into `proposal`, calling `changed` after each event. */
export async function readProposal(
  proposal: FixProposal,
  events: AsyncIterable<StreamEvent>,
  changed: () => void
): Promise<void> {
  try {
    for await (const event of events) {
      const more = proposal.push(event);
      changed();
      if (!more) {
        return;
      }
    }
    if (proposal.state === 'streaming') {
      proposal.fail({ kind: 'broken', message: 'the connection ended before the answer did.' });
    }
  } catch (error) {
    if (proposal.state !== 'streaming') {
      return; // stopped: the abort ends the read
    }
    proposal.fail(
      error instanceof CompletionError
        ? error.info
        : { kind: 'unreachable', message: String((error as Error)?.message ?? error) }
    );
  }
  changed();
}

export interface Edit {
  from: number;
  to: number;
  insert: string;
}

/** The one replacement that turns `before` into `after`, without their common ends (so the
 * cursor and the unchanged lines stay put, and undo restores it in one step). */
export function minimalEdit(before: string, after: string): Edit {
  let start = 0;
  const shorter = Math.min(before.length, after.length);
  while (start < shorter && before[start] === after[start]) {
    start++;
  }
  let end = 0;
  while (
    end < shorter - start &&
    before[before.length - 1 - end] === after[after.length - 1 - end]
  ) {
    end++;
  }
  // Never split a surrogate pair (an emoji) between the kept and the replaced parts.
  if (start > 0 && isHighSurrogate(before.charCodeAt(start - 1))) {
    start--;
  }
  if (end > 0 && isLowSurrogate(before.charCodeAt(before.length - end))) {
    end--;
  }
  return { from: start, to: before.length - end, insert: after.slice(start, after.length - end) };
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code: number) => code >= 0xdc00 && code <= 0xdfff;
