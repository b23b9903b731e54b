/**
 * What the status dialog shows, as label/value rows: readable, in the order a user asks —
 * is it running, which model, how fast was the last suggestion, how much came from the cache.
 * Free of JupyterLab so it can be unit-tested.
 */

import { LabStatus, Usage } from '../client/wire';

export type Row = [label: string, value: string];

export interface LastSuggestion {
  firstTextMs: number | null;
  usage: Usage | null;
}

const STATES: Record<string, string> = {
  ready: 'ready',
  loading: 'loading the model',
  starting: 'starting the engine process',
  stopped: 'unloaded — starts on the next request',
  not_responding: 'not responding (frozen or swamped)',
  error: 'error'
};

/** The built-in demo model: what the dialog and the status bar say while it is served. */
export const DEMO_NOTE =
  'demo model (random weights): its suggestions are gibberish. For Codestral: command palette > ' +
  '"Codestral: Download the Codestral Weights" (or `%codestral pull` in a notebook), then ' +
  'restart the engine (`%codestral stop`).';

export const isDemoModel = (model: unknown): boolean => String(model ?? '').startsWith('tiny-');

const ms = (seconds: number): string => `${Math.round(seconds * 1000)} ms`;
const bytes = (n: number): string =>
  n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${Math.round(n / 1e6)} MB`;

/** Rows for the engine state reported by the server's status route and the last suggestion. */
export function statusRows(status: Partial<LabStatus>, last: LastSuggestion | null): Row[] {
  const rows: Row[] = [];
  const state = String(status.state ?? 'unknown');
  let stateText = STATES[state] ?? state;
  if (state === 'loading' || state === 'starting') {
    const stage = status.stage ? `: ${status.stage}` : '';
    stateText += ` (${Math.round((status.progress ?? 0) * 100)}%${stage})`;
  }
  if (status.enabled === false) {
    stateText = 'off on this Jupyter server (CodestralCompletion.enabled)';
  }
  rows.push(['State', stateText]);
  if (status.error) {
    rows.push(['Error', String(status.error)]);
  }
  if (status.fix) {
    rows.push(['Fix', String(status.fix)]);
  }
  if (status.engine === 'remote') {
    rows.push(['Engine', `remote server at ${status.url ?? '?'}`]);
    if (status.protocol) {
      rows.push(['Protocol', String(status.protocol)]);
    }
    if (Array.isArray(status.served_models) && status.served_models.length > 0) {
      rows.push(['Server serves', status.served_models.join(', ')]);
    }
    if (status.classroom) {
      // The course's JupyterHub service: the student's mode, set by their teacher's groups.
      rows.push(['Course', `the course's Codestral service; your mode: ${status.classroom.mode}`]);
    }
  }
  if (status.model) {
    const demo = isDemoModel(status.model) ? ` — ${DEMO_NOTE}` : '';
    rows.push(['Model', `${status.model}${demo}`]);
  }
  if (status.backend) {
    const threads = status.threads
      ? `${status.threads} thread${status.threads > 1 ? 's' : ''}`
      : null;
    const where = [
      status.backend,
      status.device,
      threads,
      status.layout && `${status.layout} layout`
    ];
    rows.push(['Backend', where.filter(Boolean).join(', ')]);
  }
  if (status.memory_bytes) {
    const cache = status.prompt_cache_bytes
      ? `, prompt cache ${bytes(status.prompt_cache_bytes)}`
      : '';
    rows.push(['Memory', `${bytes(status.memory_bytes)}${cache}`]);
  }
  if (status.context_length) {
    rows.push(['Context window', `${status.context_length} tokens`]);
  }
  if (typeof status.queue_length === 'number') {
    rows.push(['Queue', `${status.queue_length} waiting`]);
  }
  const usage = last?.usage;
  if (last && (usage || last.firstTextMs !== null)) {
    const parts: string[] = [];
    if (last.firstTextMs !== null) {
      parts.push(`first text after ${Math.round(last.firstTextMs)} ms`);
    }
    const ttft = usage?.time_to_first_token_s;
    if (ttft !== null && ttft !== undefined) {
      parts.push(`engine's first token after ${ms(ttft)}`);
    }
    if (usage?.decode_tokens_per_s) {
      parts.push(`${usage.decode_tokens_per_s.toFixed(1)} tokens/s`);
    }
    rows.push(['Last suggestion', parts.join(', ')]);
    const cached = usage?.cached_prompt_tokens;
    if (usage?.prompt_tokens && typeof cached === 'number') {
      const share = Math.round((100 * cached) / usage.prompt_tokens);
      rows.push(['Cache reuse', `${cached} of ${usage.prompt_tokens} prompt tokens (${share}%)`]);
    }
  }
  const settings = status.settings;
  if (settings?.context_tokens) {
    rows.push(['Server context budget', `${settings.context_tokens} tokens`]);
  }
  return rows;
}
