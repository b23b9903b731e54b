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
  /** null: the server did not say. */
  usage: Usage | null;
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

/** One request's token counts and speed (codestral_engine's `RequestUsage`). */
export interface RequestUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  /** Reused from the prompt cache (only our engine reports it). */
  cached_prompt_tokens?: number | null;
  draft_tokens?: number | null;
  accepted_draft_tokens?: number | null;
  time_to_first_token_s?: number | null;
  decode_tokens_per_s?: number | null;
}

/** The one usage shape (client/shapes.py's `Usage`, read from whichever shape the engine's
 * server answered in). */
export interface Usage extends RequestUsage {
  peak_memory_bytes?: number | null;
}

/** The engine's last finished request (codestral_engine's `LastRequest`). */
export interface LastRequest extends RequestUsage {
  finish_reason?: string | null;
}

/** The engine's status (codestral_engine's `EngineStatus`, what `GET /v1/status` serves). */
export interface EngineStatus {
  /** stopped | starting | loading | ready | error | not_responding | stopping */
  state: string;
  /** Of a load, 0..1. */
  progress?: number | null;
  stage?: string | null;
  error?: string | null;
  model?: string | null;
  model_path?: string | null;
  pid?: number | null;
  uptime_s?: number | null;
  last_request?: LastRequest | null;
  layout?: string | null;
  backend?: string | null;
  device?: string | null;
  threads?: number | null;
  context_length?: number | null;
  /** null: no engine of ours to ask (not loaded, or remote). */
  queue_length?: number | null;
  running_requests?: number | null;
  memory_bytes?: number | null;
  prompt_cache_bytes?: number | null;
  finished_requests?: Record<string, number>;
}

/** A course's JupyterHub service, of itself and of this student. */
export interface ClassroomStatus {
  service: string;
  user: string;
  /** on | hints | off */
  mode: string;
  model: string;
  upstream_protocol: string;
}

/** Any server's status (client/status.py): the engine's, with what a remote server adds. */
export interface Status extends EngineStatus {
  url?: string | null;
  protocol?: string | null;
  served_models?: string[];
  classroom?: ClassroomStatus | null;
  kind?: string | null;
  fix?: string | null;
}

/** The server's settings the browser follows (`c.CodestralCompletion`). */
export interface LabSettings {
  enabled: boolean;
  context_tokens: number;
  suffix_share: number;
  max_tokens_limit: number;
}

/** `GET codestral/status`: the engine's status, where it runs and the server's settings. */
export interface LabStatus extends Status {
  /** shared | remote */
  engine: string;
  enabled: boolean;
  pull_command: string;
  settings: LabSettings;
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
