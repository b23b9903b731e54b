import { describe, expect, it } from 'vitest';

import { FixProposal, minimalEdit, readProposal } from '../src/fix/proposal';
import { CompletionError, StreamEvent } from '../src/client/wire';

const done = (finish_reason = 'stop'): StreamEvent => ({ type: 'done', finish_reason, usage: {} });
const delta = (text: string): StreamEvent => ({ type: 'delta', text });

async function* events(list: StreamEvent[], thenThrow?: Error): AsyncGenerator<StreamEvent> {
  for (const event of list) {
    yield event;
  }
  if (thenThrow) {
    throw thenThrow;
  }
}

describe('a fix proposal', () => {
  it('streams into text with the cell own line ends, then can be accepted', async () => {
    const proposal = new FixProposal('x = 1\ny = x + z', 'fix');
    const seen: string[] = [];
    await readProposal(
      proposal,
      events([delta('\nx = 1\n'), delta('z = 0\ny = x + z\n\n'), done()]),
      () => seen.push(proposal.state)
    );
    expect(proposal.text).toBe('x = 1\nz = 0\ny = x + z');
    expect(proposal.acceptable).toBe(true);
    expect(proposal.summary).toBe('proposed fix');
    expect(seen).toEqual(['streaming', 'streaming', 'done']);
    expect(new FixProposal('x = 1\n', 'fix').text).toBe('\n'); // keeps the cell's newline
  });

  it('is not whole when the engine ends it early', () => {
    const cut = new FixProposal('x = 1', 'fix');
    cut.push(delta('x = 2'));
    cut.push(done('cancelled'));
    expect([cut.state, cut.acceptable, cut.error?.kind]).toEqual(['failed', false, 'cancelled']);
  });

  it('compares a cell ending in a newline line for line', () => {
    const proposal = new FixProposal('a = 1\nb = 2\n', 'fix');
    proposal.push(delta('a = 1\n'));
    expect(proposal.compared).toBe('a = 1\n');
  });

  it('compares with only the lines it has reached until it is whole', () => {
    const proposal = new FixProposal('a = 1\nb = 2\nc = 3', 'fix');
    proposal.push(delta('a = 1\nb ='));
    expect(proposal.compared).toBe('a = 1\nb = 2');
    proposal.stop();
    expect(proposal.compared).toBe('a = 1\nb = 2'); // a stopped one never shows the rest deleted
    const whole = new FixProposal('a = 1\nb = 2\nc = 3', 'fix');
    whole.push(delta('a = 1'));
    whole.push(done());
    expect(whole.compared).toBe('a = 1\nb = 2\nc = 3');
  });

  it('is not acceptable when stopped, failed, empty or unchanged; says when it was cut off', () => {
    const stopped = new FixProposal('x', 'fix');
    stopped.push(delta('y'));
    stopped.stop();
    expect(stopped.push(done())).toBe(false);
    expect([stopped.state, stopped.acceptable]).toEqual(['stopped', false]);

    const same = new FixProposal('x = 1', 'fix');
    same.push(delta('x = 1\n'));
    same.push(done());
    expect([same.acceptable, same.summary]).toEqual([false, 'no change proposed']);

    const cut = new FixProposal('x = 1', 'fix');
    cut.push(delta('x = 2'));
    cut.push(done('length'));
    expect(cut.acceptable).toBe(true);
    expect(cut.summary).toMatch(/cut off at its token limit/);

    const explained = new FixProposal('x = 1', 'explain');
    explained.push(delta(' The name z is not defined. '));
    explained.push(done());
    expect([explained.text, explained.acceptable]).toEqual(['The name z is not defined.', false]);
  });

  it('reports errors from the stream, the route and a broken connection with their fix', async () => {
    const failed = new FixProposal('x', 'fix');
    await readProposal(
      failed,
      events([
        { type: 'error', error: { kind: 'context', message: 'too long', fix: 'Lower it.' } }
      ]),
      () => undefined
    );
    expect([failed.state, failed.summary]).toEqual(['failed', 'could not fix: too long Lower it.']);

    const refused = new FixProposal('x', 'fix');
    const disabled = new CompletionError({ kind: 'disabled', message: 'Off here.', fix: 'Ask.' });
    await readProposal(refused, events([], disabled), () => undefined);
    expect(refused.error?.kind).toBe('disabled');

    const broken = new FixProposal('x', 'fix');
    await readProposal(broken, events([delta('y')]), () => undefined);
    expect([broken.state, broken.error?.kind]).toEqual(['failed', 'broken']);

    const waiting = new FixProposal('x', 'fix');
    waiting.fail({ kind: 'engine_starting', message: 'starting' });
    waiting.waitForEngine();
    expect([waiting.state, waiting.error, waiting.summary]).toEqual([
      'streaming',
      null,
      'waiting for the engine to load (the status bar shows its progress)…'
    ]);
  });

  it('stops reading quietly when the user stops it', async () => {
    const proposal = new FixProposal('x', 'fix');
    proposal.stop();
    await readProposal(proposal, events([], new Error('aborted')), () => undefined);
    expect([proposal.state, proposal.error]).toEqual(['stopped', null]);
  });
});

describe('the edit that applies a fix', () => {
  const apply = (before: string, after: string) => {
    const { from, to, insert } = minimalEdit(before, after);
    return before.slice(0, from) + insert + before.slice(to);
  };

  it('replaces only what differs', () => {
    expect(minimalEdit('import math\nx = sqrt(2)', 'import math\nx = math.sqrt(2)')).toEqual({
      from: 16,
      to: 16,
      insert: 'math.'
    });
    expect(minimalEdit('same', 'same')).toEqual({ from: 4, to: 4, insert: '' });
    for (const [a, b] of [
      ['', 'x = 1'],
      ['x = 1', ''],
      ['aaa', 'aa'],
      ['abcabc', 'abc'],
      ['y = 1\nprint(y)', 'x = 1\ny = 1\nprint(y)']
    ]) {
      expect(apply(a, b)).toBe(b);
    }
  });

  it('never splits an emoji', () => {
    const before = "s = '\u{1F600}'";
    const after = "s = '\u{1F601}'"; // same high surrogate, another low one
    const edit = minimalEdit(before, after);
    expect(edit.insert).toBe('\u{1F601}');
    expect(apply(before, after)).toBe(after);
    const grown = minimalEdit('\u{1F600}a', '\u{1F600}\u{1F600}a');
    expect(apply('\u{1F600}a', '\u{1F600}\u{1F600}a')).toBe('\u{1F600}\u{1F600}a');
    expect(grown.insert.length % 2).toBe(0);
  });
});
