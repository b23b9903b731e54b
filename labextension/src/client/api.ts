/** The server extension's routes, called with JupyterLab's authenticated connection. */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  CompleteRequest,
  CompletionError,
  FixRequest,
  LabStatus,
  readEvents,
  StreamEvent
} from './wire';

function url(route: string): [string, ServerConnection.ISettings] {
  const settings = ServerConnection.makeSettings();
  return [URLExt.join(settings.baseUrl, 'codestral', route), settings];
}

async function errorOf(response: Response): Promise<CompletionError> {
  let info = { kind: 'http', message: `HTTP ${response.status} ${response.statusText}` };
  try {
    const data = await response.json();
    if (data && data.error) {
      info = data.error;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new CompletionError(info);
}

/** Ghost text: a FIM completion at the cursor. */
export function streamCompletion(
  body: CompleteRequest,
  signal: AbortSignal
): AsyncGenerator<StreamEvent> {
  return streamEvents('complete', body, signal);
}

/** A fix at a traceback (or its explanation). */
export function streamFix(body: FixRequest, signal: AbortSignal): AsyncGenerator<StreamEvent> {
  return streamEvents('fix', body, signal);
}

async function* streamEvents(
  route: string,
  body: CompleteRequest | FixRequest,
  signal: AbortSignal
): AsyncGenerator<StreamEvent> {
  const [target, settings] = url(route);
  const response = await ServerConnection.makeRequest(
    target,
    { method: 'POST', body: JSON.stringify(body), signal },
    settings
  );
  if (!response.ok || !response.body) {
    throw await errorOf(response);
  }
  yield* readEvents(response.body);
}

export async function getStatus(): Promise<LabStatus> {
  const [target, settings] = url('status');
  const response = await ServerConnection.makeRequest(target, {}, settings);
  if (!response.ok) {
    throw await errorOf(response);
  }
  return response.json();
}

export async function startEngine(): Promise<LabStatus> {
  const [target, settings] = url('start');
  const response = await ServerConnection.makeRequest(target, { method: 'POST' }, settings);
  if (!response.ok) {
    throw await errorOf(response);
  }
  return response.json();
}

/** The kernel-facts probe: setup code and the user expressions (NAMES: a JSON list) for the
 * facts and for where the names come from. */
export interface Probe {
  setup: string;
  expression: string;
  origins: string;
}

export async function getProbe(): Promise<Probe> {
  const [target, settings] = url('probe');
  const response = await ServerConnection.makeRequest(target, {}, settings);
  if (!response.ok) {
    throw await errorOf(response);
  }
  return response.json();
}

const ENGINE_POLL_MS = 1000;

/** Wait for the engine to finish loading; false if it failed or the wait was cancelled. */
export async function engineReady(signal: AbortSignal): Promise<boolean> {
  while (!signal.aborted) {
    await new Promise(resolve => setTimeout(resolve, ENGINE_POLL_MS));
    const state = (await getStatus().catch(() => ({ state: 'error' }))).state;
    if (state === 'ready') {
      return true;
    }
    if (state === 'error') {
      return false;
    }
  }
  return false;
}
