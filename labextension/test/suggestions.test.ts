import { describe, expect, it } from 'vitest';

import { ErrorReporter } from '../src/client/errorReporter';
import { adaptiveDelay, CompletionRequest, SuggestionSource } from '../src/completion/suggestions';
import { readEvents, StreamEvent } from '../src/client/wire';

const request = (before: string, after = ''): CompletionRequest => ({
  before,
  after,
  cursor: { lineBefore: before.split('\n').pop()!, lineAfter: '', after, multiline: 'auto' },
  candidates: 1
});

/** A server stand-in that streams the given deltas, one per call of `step()`. */
function fakeServer(deltas: string[]) {
  const signals: AbortSignal[] = [];
  let release: (() => void) | null = null;
  const step = () => {
    const r = release;
    release = null;
    r?.();
  };
  async function* streamer(
    _r: CompletionRequest,
    _c: number,
    signal: AbortSignal
  ): AsyncGenerator<StreamEvent> {
    signals.push(signal);
    yield { type: 'context', prompt_tokens: 10 };
    for (const text of deltas) {
      await new Promise<void>(resolve => (release = resolve));
      if (signal.aborted) {
        return;
      }
      yield { type: 'delta', text };
    }
    yield { type: 'done', finish_reason: 'length', usage: { prompt_tokens: 10 } };
  }
  return { streamer, signals, step };
}

const tick = () => new Promise(resolve => setTimeout(resolve, 0));
const noSleep = async () => undefined;

describe('SuggestionSource', () => {
  it('streams the post-processed text and finishes', async () => {
    const server = fakeServer(['1', '23', '\nnext']);
    const source = new SuggestionSource({
      streamer: server.streamer,
      debounceMs: 0,
      sleep: noSleep
    });
    const shown = (await source.fetch(request('x = ')))!;
    const seen: string[] = [];
    const watching = (async () => {
      for await (const text of shown.suggestions[0].watch(0)) {
        seen.push(text);
      }
    })();
    for (let i = 0; i < 4; i++) {
      await tick();
      server.step();
    }
    await watching;
    expect(seen).toEqual(['1', '123']);
    expect(shown.suggestions[0].done).toBe(true);
  });

  it('aborts the previous request when a new keystroke arrives', async () => {
    const server = fakeServer(['a', 'b', 'c']);
    const source = new SuggestionSource({
      streamer: server.streamer,
      debounceMs: 0,
      sleep: noSleep
    });
    await source.fetch(request('x = '));
    await tick();
    await source.fetch(request('x = 9'));
    await tick();
    expect(server.signals).toHaveLength(2);
    expect(server.signals[0].aborted).toBe(true);
    expect(server.signals[1].aborted).toBe(false);
  });

  it('drops a keystroke superseded during its debounce, without a request', async () => {
    const server = fakeServer(['a']);
    let wake: (() => void) | null = null;
    const sleep = (_ms: number, signal: AbortSignal) =>
      new Promise<void>((resolve, reject) => {
        wake = resolve;
        signal.addEventListener('abort', () => reject(new Error('aborted')));
      });
    const source = new SuggestionSource({ streamer: server.streamer, debounceMs: 100, sleep });
    const first = source.fetch(request('x'));
    const second = source.fetch(request('xy'));
    expect(await first).toBeNull();
    wake!();
    expect(await second).not.toBeNull();
    await tick();
    expect(source.requests).toBe(1);
  });

  it('reuses the suggestion when the user types what it shows', async () => {
    const server = fakeServer(['range(10)']);
    const source = new SuggestionSource({
      streamer: server.streamer,
      debounceMs: 0,
      sleep: noSleep
    });
    const first = (await source.fetch(request('for i in ')))!;
    await tick();
    server.step();
    for (let i = 0; i < 3; i++) await tick();
    expect(first.suggestions[0].text).toBe('range(10)');

    const typed = (await source.fetch(request('for i in ran')))!;
    expect(typed.reused).toBe(true);
    expect(typed.typed).toBe(3);
    const rest: string[] = [];
    for await (const text of typed.suggestions[0].watch(typed.typed)) rest.push(text);
    expect(rest).toEqual(['ge(10)']);
    expect(source.requests).toBe(1);

    const diverged = await source.fetch(request('for i in rx'));
    expect(diverged!.reused).toBe(false);
    expect(source.requests).toBe(2);
  });

  it('reports a server error on the suggestion', async () => {
    async function* failing(): AsyncGenerator<StreamEvent> {
      yield { type: 'error', error: { kind: 'auth', message: 'bad key', fix: 'set it' } };
    }
    const source = new SuggestionSource({ streamer: failing, debounceMs: 0, sleep: noSleep });
    const shown = (await source.fetch(request('x')))!;
    for await (const _ of shown.suggestions[0].watch(0)) {
      // until done
    }
    expect(shown.suggestions[0].error?.info.kind).toBe('auth');
  });
});

describe('adaptiveDelay', () => {
  it('waits the base delay for fast typists and half of it for slow ones', () => {
    expect(adaptiveDelay([], 150)).toBe(150);
    expect(adaptiveDelay([60, 80, 70, 90], 150)).toBe(150);
    expect(adaptiveDelay([900, 700, 1200], 150)).toBe(75);
  });
});

describe('readEvents', () => {
  it('parses newline-delimited JSON split anywhere across chunks', async () => {
    const text =
      '{"type":"delta","text":"a"}\n{"type":"delta","text":"é"}\n{"type":"done","finish_reason":"stop","usage":{}}\n';
    const bytes = new TextEncoder().encode(text);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
        controller.close();
      }
    });
    const events: StreamEvent[] = [];
    for await (const event of readEvents(stream)) events.push(event);
    expect(events.map(e => e.type)).toEqual(['delta', 'delta', 'done']);
    expect((events[1] as { text: string }).text).toBe('é');
  });
});

describe('ErrorReporter', () => {
  it('shows each kind once until a suggestion succeeds, and never the quiet ones', () => {
    const shown: string[] = [];
    const errors = new ErrorReporter(e => shown.push(e.kind));
    for (let i = 0; i < 5; i++) {
      errors.report({ kind: 'auth', message: 'bad key' });
      errors.report({ kind: 'engine_starting', message: 'loading' });
    }
    errors.report({ kind: 'unreachable', message: 'down' });
    expect(shown).toEqual(['auth', 'unreachable']);
    errors.succeeded();
    errors.report({ kind: 'auth', message: 'bad key' });
    expect(shown).toEqual(['auth', 'unreachable', 'auth']);
  });
});

describe('candidates', () => {
  it('streams one request per candidate, each with its own index', async () => {
    const seen: number[] = [];
    async function* streamer(
      _r: CompletionRequest,
      candidate: number
    ): AsyncGenerator<StreamEvent> {
      seen.push(candidate);
      yield { type: 'delta', text: `option ${candidate}` };
      yield { type: 'done', finish_reason: 'length', usage: {} };
    }
    const source = new SuggestionSource({ streamer, debounceMs: 0, sleep: noSleep });
    const shown = (await source.fetch({ ...request('x = '), candidates: 3 }))!;
    for (const s of shown.suggestions) {
      for await (const _ of s.watch(0)) {
        // until done
      }
    }
    expect(seen).toEqual([0, 1, 2]);
    expect(shown.suggestions.map(s => s.text)).toEqual(['option 0', 'option 1', 'option 2']);
  });
});

describe('line breaks', () => {
  const run = async (chunks: string[], before: string) => {
    async function* streamer(): AsyncGenerator<StreamEvent> {
      for (const text of chunks) {
        yield { type: 'delta', text };
      }
    }
    const source = new SuggestionSource({ streamer, debounceMs: 0, sleep: noSleep });
    const shown = (await source.fetch(request(before)))!;
    for await (const _ of shown.suggestions[0].watch(0)) {
      // until done
    }
    return shown.suggestions[0].text;
  };

  it('treats a lone \r as a line break', async () => {
    expect(await run(['a = 1\rb = 2'], 'x = ')).toBe('a = 1');
  });

  it('joins \r\n split across chunks into one line break', async () => {
    expect(await run(['\n    a\r', '\n    b'], 'if x:')).toBe('\n    a\n    b');
  });
});

describe('superseded', () => {
  it('marks only suggestions that a newer keystroke cut short', async () => {
    const server = fakeServer(['a', 'b']);
    const source = new SuggestionSource({
      streamer: server.streamer,
      debounceMs: 0,
      sleep: noSleep
    });
    const first = (await source.fetch(request('x = ')))!;
    await tick();
    await source.fetch(request('x = 9'));
    expect(first.suggestions[0].superseded).toBe(true);

    async function* oneLine(): AsyncGenerator<StreamEvent> {
      yield { type: 'delta', text: 'done\nmore' };
    }
    const own = new SuggestionSource({ streamer: oneLine, debounceMs: 0, sleep: noSleep });
    const shown = (await own.fetch(request('y = ')))!;
    for await (const _ of shown.suggestions[0].watch(0)) {
      // until done
    }
    own.abort(); // a later keystroke after it finished
    expect(shown.suggestions[0].superseded).toBe(false);
  });
});
