import { describe, expect, it } from 'vitest';

import { statusRows } from '../src/status/statusDetails';

const ready = {
  state: 'ready',
  model: 'Codestral-22B-v0.1',
  backend: 'mlx',
  device: 'gpu',
  layout: 'mlx',
  memory_bytes: 12_600_000_000,
  prompt_cache_bytes: 300_000_000,
  context_length: 32768,
  queue_length: 0,
  settings: { context_tokens: 2048 }
};

describe('statusRows', () => {
  it('describes a ready engine and the last suggestion in words, not JSON', () => {
    const rows = Object.fromEntries(
      statusRows(ready, {
        firstTextMs: 212.4,
        usage: {
          prompt_tokens: 1800,
          cached_prompt_tokens: 1782,
          time_to_first_token_s: 0.181,
          decode_tokens_per_s: 31.26
        }
      })
    );
    expect(rows['State']).toBe('ready');
    expect(rows['Model']).toBe('Codestral-22B-v0.1');
    expect(rows['Backend']).toBe('mlx, gpu, mlx layout');
    expect(Object.fromEntries(statusRows({ ...ready, threads: 1 }, null))['Backend']).toBe(
      'mlx, gpu, 1 thread, mlx layout'
    );
    expect(rows['Memory']).toBe('12.6 GB, prompt cache 300 MB');
    expect(rows['Queue']).toBe('0 waiting');
    expect(rows['Last suggestion']).toBe(
      "first text after 212 ms, engine's first token after 181 ms, 31.3 tokens/s"
    );
    expect(rows['Cache reuse']).toBe('1782 of 1800 prompt tokens (99%)');
    // A server that does not report its prompt cache (vLLM by default): no false "0 of N".
    const unreported = Object.fromEntries(
      statusRows(ready, { firstTextMs: 50, usage: { prompt_tokens: 1800 } })
    );
    expect(unreported['Cache reuse']).toBeUndefined();
    for (const [, value] of statusRows(ready, null)) {
      expect(value).not.toMatch(/[{}]/);
    }
  });

  it('shows loading progress with its stage, errors, and the demo model', () => {
    const loading = Object.fromEntries(
      statusRows({ state: 'loading', progress: 0.42, stage: 'loading weights (44.1 GB)' }, null)
    );
    expect(loading['State']).toBe('loading the model (42%: loading weights (44.1 GB))');
    const failed = Object.fromEntries(
      statusRows({ state: 'error', error: 'truncated file' }, null)
    );
    expect(failed['Error']).toBe('truncated file');
    const demo = Object.fromEntries(statusRows({ ...ready, model: 'tiny-codestral' }, null));
    expect(demo['Model']).toMatch(/demo model \(random weights\)/);
    expect(demo['Model']).toMatch(/Download the Codestral Weights/);
    const frozen = Object.fromEntries(
      statusRows({ state: 'not_responding', error: 'The engine (pid 42) is not responding.' }, null)
    );
    expect(frozen['State']).toBe('not responding (frozen or swamped)');
    expect(frozen['Error']).toMatch(/pid 42/);
    const off = Object.fromEntries(statusRows({ ...ready, enabled: false }, null));
    expect(off['State']).toMatch(/^off/);
  });

  it("names the course's service and the student's mode", () => {
    const course = {
      state: 'ready',
      engine: 'remote',
      url: 'http://127.0.0.1:10350/services/codestral',
      protocol: 'mistral',
      classroom: { mode: 'hints', user: 'bob' }
    };
    expect(Object.fromEntries(statusRows(course, null))['Course']).toBe(
      "the course's Codestral service; your mode: hints"
    );
    const plain = Object.fromEntries(statusRows({ ...course, classroom: undefined }, null));
    expect(plain['Course']).toBeUndefined();
  });

  it('shows a remote server: its protocol, what it serves, and the fix for an error', () => {
    const remote = {
      engine: 'remote',
      state: 'ready',
      url: 'http://gpu-box:8000',
      protocol: 'vllm',
      model: 'codestral-latest',
      served_models: ['codestral-latest'],
      queue_length: null // as the server sends it: no engine of ours to ask
    };
    const rows = Object.fromEntries(statusRows(remote, null));
    expect(rows['Engine']).toBe('remote server at http://gpu-box:8000');
    expect(rows['Queue']).toBeUndefined(); // a remote server reports no queue
    expect(rows['Protocol']).toBe('vllm');
    expect(rows['Server serves']).toBe('codestral-latest');
    const wrong = Object.fromEntries(
      statusRows({ ...remote, state: 'error', error: 'not served', fix: 'Set remote_model' }, null)
    );
    expect(wrong['Fix']).toBe('Set remote_model');
  });
});
