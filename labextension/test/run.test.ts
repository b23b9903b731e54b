import { describe, expect, it } from 'vitest';

import { StreamEvent } from '../src/client/wire';
import { CellRef } from '../src/fix/cells';
import { FixProposal } from '../src/fix/proposal';
import { runFix } from '../src/fix/run';

const starting: StreamEvent = {
  type: 'error',
  error: { kind: 'engine_starting', message: 'the engine is loading.' }
};
const answer: StreamEvent[] = [
  { type: 'delta', text: 'x = 2\n' },
  { type: 'done', finish_reason: 'stop', usage: {} }
];

/** A cell as far as a fix run looks at it: where it is, what it holds. */
const cellHolding = (source: string): CellRef =>
  ({ panel: {}, cell: { model: { sharedModel: { getSource: () => source } } }, index: 0 }) as any;

async function* stream(events: StreamEvent[]): AsyncGenerator<StreamEvent> {
  yield* events;
}

/** A run whose first request meets a loading engine; `now` is the cell after the wait. */
async function runAcrossALoad(now: CellRef | null, loaded: boolean) {
  const proposal = new FixProposal('x = 1', 'fix');
  const asked: CellRef[] = [];
  await runFix({
    proposal,
    ref: cellHolding('x = 1'),
    signal: new AbortController().signal,
    request: at => {
      asked.push(at);
      return stream(asked.length === 1 ? [starting] : answer);
    },
    locate: () => now,
    changed: () => undefined,
    ready: async () => loaded
  });
  return { proposal, asked };
}

describe('a fix run', () => {
  it('waits for a loading engine, then asks again for the cell where it is now', async () => {
    const moved = cellHolding('x = 1');
    const { proposal, asked } = await runAcrossALoad(moved, true);
    expect([proposal.state, proposal.text]).toEqual(['done', 'x = 2']);
    expect(asked.length).toBe(2);
    expect(asked[1]).toBe(moved);
  });

  it('fails, without asking again, when the cell changed or left while the engine loaded', async () => {
    for (const now of [cellHolding('x = 10'), null]) {
      const { proposal, asked } = await runAcrossALoad(now, true);
      expect([proposal.state, proposal.error?.kind, asked.length]).toEqual([
        'failed',
        'changed',
        1
      ]);
    }
  });

  it('fails when the engine failed to load', async () => {
    const { proposal } = await runAcrossALoad(cellHolding('x = 1'), false);
    expect([proposal.state, proposal.error?.kind]).toEqual(['failed', 'engine_error']);
  });
});
