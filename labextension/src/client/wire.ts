/**
 * The lab routes' wire protocol, mirroring `jupyter_codestral/lab/wire.py` field for field
 * (tests/test_lab_wire.py fails when the two drift apart): the requests the browser sends to
 * `POST codestral/complete` (ghost text) and `POST codestral/fix` (a fix at a traceback), and
 * each newline-delimited JSON line it gets back.
 */

export interface Cell {
  cell_type?: 'code' | 'markdown' | 'raw';
  source: string;
}

/** Where the kernel says a name comes from (the probe's `origins`). */
export interface Origin {
  name: string;
  file: string;
  qualname?: string;
}

/** Code the user edited or viewed recently in another document of this JupyterLab. */
export interface RecentChunk {
  path: string;
  text: string;
}

/** What the project context needs (complete and fix requests carry it). */
export interface ProjectFields {
  /** The document's path under the server's root. */
  path?: string | null;
  /** The user's "project code in the context" setting. */
  project?: boolean;
  origins?: Origin[];
  /** The names the current cell held when the cursor entered it. */
  focus?: string[];
  /** Recently seen code of other documents, edited before viewed, newest first. */
  recent?: RecentChunk[];
}

export interface CompleteRequest extends ProjectFields {
  cells: Cell[];
  cell: number;
  /** In code points of the cell's source. */
  cursor: number;
  language?: string;
  max_tokens?: number;
  temperature?: number;
  seed?: number | null;
  multiline?: boolean;
  /** 0: no first-line time budget. */
  time_budget_ms?: number;
  context_tokens?: number | null;
  session?: string | null;
  warm?: boolean;
  /** Live objects in the kernel ("name: description" lines from the server's probe). */
  facts?: string[];
}

/** A notebook error output, as nbformat stores it. */
export interface ErrorOutput {
  ename: string;
  evalue: string;
  traceback?: string[];
}

/** A failed cell (`cells[cell]`, as it is now) and its error output. */
export interface FixRequest extends ProjectFields {
  cells: Cell[];
  cell: number;
  error: ErrorOutput;
  language?: string;
  /** explain: one or two sentences instead of code (the teaching hints mode). */
  mode?: 'fix' | 'explain';
  context_tokens?: number | null;
  facts?: string[];
}

/** First line: what the prompt holds (ghost text only). */
export interface ContextEvent {
  type: 'context';
  prompt_tokens: number;
  cells_above: number;
  cells_below: number;
  elided_above: number;
  elided_below: number;
  facts?: number;
  definitions?: number;
}

export interface DeltaEvent {
  type: 'delta';
  text: string;
}

/** Last line of a suggestion that ended well. */
export interface DoneEvent {
  type: 'done';
  finish_reason: string | null;
  usage: Usage;
}

export interface ErrorInfo {
  kind: string;
  message: string;
  fix?: string;
}

/** Last line of a suggestion that failed; also the body of a 4xx answer (without `type`). */
export interface ErrorEvent {
  type: 'error';
  error: ErrorInfo;
}

export type StreamEvent = ContextEvent | DeltaEvent | DoneEvent | ErrorEvent;

/** The engine's usage, as Mistral's API reports it (passed through unchanged). */
export interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number };
  timings?: { time_to_first_token_s?: number | null; decode_tokens_per_s?: number | null };
}

export class CompletionError extends Error {
  constructor(readonly info: ErrorInfo) {
    super(info.message);
  }
}

/** Parse a fetch Response body of newline-delimited JSON into events. */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) {
          yield JSON.parse(line) as StreamEvent;
        }
      }
    }
  } finally {
    // Left early (a stop, an error): stop the download too, not only this reader.
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
