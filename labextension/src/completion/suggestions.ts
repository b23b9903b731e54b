/**
 * The keystroke path, free of JupyterLab so it can be unit-tested: debounce, abort, typed-ahead
 * reuse and streaming of post-processed suggestions.
 */

import { CursorContext, postprocess } from './postprocess';
import { CompletionError, StreamEvent, Usage } from '../client/wire';

export interface CompletionRequest {
  /** Text before and after the cursor in the current cell or file. */
  before: string;
  after: string;
  cursor: CursorContext;
  /** How many suggestions to offer (Alt+[ / Alt+] cycle through them). */
  candidates: number;
  /** What the streamer sends along (cells, settings); opaque here. */
  payload?: unknown;
}

export type Streamer = (
  request: CompletionRequest,
  candidate: number,
  signal: AbortSignal
) => AsyncIterable<StreamEvent>;

export interface Timing {
  /** Keystroke (fetch call) to the first shown character, in ms. */
  firstTextMs: number | null;
  usage: Usage | null;
}

/** The text with every line break as `\n` (editors also break lines at `\r`). */
const lines = (text: string): string => text.replace(/\r\n?/g, '\n');

/** A suggestion as it streams in; several `fetch` calls may show it (typed-ahead reuse). */
export class Suggestion {
  raw = '';
  text = '';
  done = false;
  /** Ended because a newer keystroke replaced it (not worth reporting). */
  superseded = false;
  error: CompletionError | null = null;
  timing: Timing = { firstTextMs: null, usage: null };
  private waiters: (() => void)[] = [];

  constructor(
    readonly before: string,
    readonly after: string,
    private readonly cursor: CursorContext,
    readonly controller: AbortController,
    private readonly started: number
  ) {}

  /** Feed one event; returns false when the stream should stop. */
  push(event: StreamEvent, now: number): boolean {
    if (event.type === 'delta') {
      this.raw += event.text;
      const processed = postprocess(lines(this.raw), this.cursor);
      if (processed.text !== this.text) {
        this.text = processed.text;
        if (this.text && this.timing.firstTextMs === null) {
          this.timing.firstTextMs = now - this.started;
        }
        this.notify();
      }
      if (processed.done) {
        this.finish();
        return false;
      }
    } else if (event.type === 'done') {
      this.timing.usage = event.usage;
      this.finish();
      return false;
    } else if (event.type === 'error') {
      this.error = new CompletionError(event.error);
      this.finish();
      return false;
    }
    return true;
  }

  finish(): void {
    if (!this.done) {
      this.done = true;
      this.text = postprocess(lines(this.raw), this.cursor).text.trimEnd();
      this.notify();
    }
  }

  /** The text shown after `typed` more characters were typed into it, as it grows. */
  async *watch(typed: number): AsyncGenerator<string> {
    let shown = '';
    for (;;) {
      const visible = this.text.slice(typed);
      if (visible !== shown) {
        shown = visible;
        yield visible;
      }
      if (this.done) {
        return;
      }
      await new Promise<void>(resolve => this.waiters.push(resolve));
    }
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    waiters.forEach(resolve => resolve());
  }
}

export interface Options {
  streamer: Streamer;
  /** Base debounce in ms; the delay adapts to typing speed around it. */
  debounceMs: number;
  now?: () => number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      return reject(new DOMException('aborted', 'AbortError'));
    }
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(new DOMException('aborted', 'AbortError'));
      },
      { once: true }
    );
  });
}

/**
 * The debounce for the next request: a fast typist (keys closer than the base delay) gets the
 * base delay, so requests wait for a pause; a slow typist, who pauses between keys anyway, gets
 * half of it.
 */
export function adaptiveDelay(intervals: number[], base: number): number {
  if (intervals.length < 3) {
    return base;
  }
  const recent = intervals.slice(-5).sort((a, b) => a - b);
  const median = recent[Math.floor(recent.length / 2)];
  return median > 2 * base ? Math.round(base / 2) : base;
}

export interface Shown {
  suggestions: Suggestion[];
  /** Characters of the suggestions already typed by the user (typed-ahead reuse). */
  typed: number;
  reused: boolean;
}

export class SuggestionSource {
  private current: Suggestion[] = [];
  private controller: AbortController | null = null;
  private lastCall: number | null = null;
  private intervals: number[] = [];
  private readonly options: Required<Options>;
  private sent = 0;

  constructor(options: Options) {
    this.options = {
      now: () => performance.now(),
      sleep: abortableSleep,
      ...options
    };
  }

  /** The debounce base, in ms (adapted to the typing speed). */
  setDebounce(ms: number): void {
    this.options.debounceMs = ms;
  }

  /** Requests sent to the server (typed-ahead reuse and debounced keys send none). */
  get requests(): number {
    return this.sent;
  }

  get active(): Suggestion | null {
    return this.current[0] ?? null;
  }

  /** Abort whatever is in flight (a newer keystroke, or the editor lost focus). */
  abort(): void {
    this.controller?.abort();
    this.controller = null;
    for (const suggestion of this.current) {
      if (!suggestion.done) {
        suggestion.superseded = true;
      }
      suggestion.controller.abort();
      suggestion.finish();
    }
  }

  /**
   * Suggestions for this cursor: reused when the user typed into the current suggestion,
   * otherwise fetched after the debounce. Null when a newer call superseded this one.
   */
  async fetch(request: CompletionRequest): Promise<Shown | null> {
    const now = this.options.now();
    if (this.lastCall !== null) {
      this.intervals.push(now - this.lastCall);
      this.intervals = this.intervals.slice(-10);
    }
    this.lastCall = now;

    const reuse = this.typedAhead(request);
    if (reuse !== null) {
      return { suggestions: this.current, typed: reuse, reused: true };
    }
    this.abort();
    const controller = new AbortController();
    this.controller = controller;
    try {
      await this.options.sleep(
        adaptiveDelay(this.intervals, this.options.debounceMs),
        controller.signal
      );
    } catch {
      return null; // a newer keystroke came during the debounce
    }
    const started = now;
    this.current = [];
    for (let i = 0; i < Math.max(1, request.candidates); i++) {
      const suggestion = new Suggestion(
        request.before,
        request.after,
        request.cursor,
        new AbortController(),
        started
      );
      controller.signal.addEventListener('abort', () => suggestion.controller.abort());
      this.current.push(suggestion);
      void this.run(request, i, suggestion);
    }
    return { suggestions: this.current, typed: 0, reused: false };
  }

  private typedAhead(request: CompletionRequest): number | null {
    const first = this.current[0];
    if (!first || first.error || request.after !== first.after) {
      return null;
    }
    if (!request.before.startsWith(first.before)) {
      return null;
    }
    const typed = request.before.slice(first.before.length);
    if (!typed || !first.text.startsWith(typed) || first.text.length <= typed.length) {
      return null;
    }
    return typed.length;
  }

  private async run(request: CompletionRequest, candidate: number, s: Suggestion) {
    this.sent += 1;
    try {
      for await (const event of this.options.streamer(request, candidate, s.controller.signal)) {
        if (!s.push(event, this.options.now())) {
          break;
        }
      }
    } catch (error) {
      if (error instanceof CompletionError) {
        s.error = error;
      } else if (!s.controller.signal.aborted) {
        s.error = new CompletionError({ kind: 'network', message: String(error) });
      }
    } finally {
      s.controller.abort(); // closes the connection if the stream stopped early
      s.finish();
    }
  }
}
