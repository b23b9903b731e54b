/** One fix from the request to its end: stream the proposal; when the engine is still loading,
 * wait for it and ask again, for the same cell as it was. */

import { engineReady } from '../client/api';
import { StreamEvent } from '../client/wire';
import { CellRef } from './cells';
import { FixProposal, readProposal } from './proposal';

export interface FixRun {
  proposal: FixProposal;
  /** The cell the fix is for, where it is now. */
  ref: CellRef;
  signal: AbortSignal;
  /** Ask for the proposal for the cell at `ref`. */
  request(ref: CellRef): AsyncIterable<StreamEvent>;
  /** Where the cell is now (cells may move while the engine loads). */
  locate(): CellRef | null;
  /** The proposal changed: show it. */
  changed(): void;
  /** Wait for a loading engine: true once it is ready (the client's poll unless given). */
  ready?: (signal: AbortSignal) => Promise<boolean>;
}

export async function runFix(run: FixRun): Promise<void> {
  const { proposal, ref, signal, request, locate, changed, ready = engineReady } = run;
  let at: CellRef | null = ref;
  for (;;) {
    await readProposal(proposal, request(at), changed);
    if (proposal.error?.kind !== 'engine_starting' || signal.aborted) {
      return;
    }
    proposal.waitForEngine();
    changed();
    const loaded = await ready(signal);
    if (signal.aborted) {
      return;
    }
    at = locate();
    if (!loaded) {
      proposal.fail({
        kind: 'engine_error',
        message: 'the engine failed to load.',
        fix: 'Click the Codestral status bar item for why.'
      });
    } else if (!at || at.cell.model.sharedModel.getSource() !== proposal.original) {
      proposal.fail({
        kind: 'changed',
        message: 'the cell changed while the engine loaded.',
        fix: 'Ask again.'
      });
    }
    if (proposal.state !== 'streaming' || !at) {
      changed();
      return;
    }
  }
}
