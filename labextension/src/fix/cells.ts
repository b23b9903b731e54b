/** Where an error output sits: its notebook cell, and the error outputs on screen. */

import type { Cell as CellWidget } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

export interface CellRef {
  panel: NotebookPanel;
  cell: CellWidget;
  index: number;
}

/** The error outputs attached now, found by the cell that holds them. */
export class ErrorOutputs<T extends { node: HTMLElement }> {
  private readonly live = new Set<T>();

  constructor(private readonly notebooks: INotebookTracker) {}

  track(output: T, on: boolean): void {
    if (on) {
      this.live.add(output);
    } else {
      this.live.delete(output);
    }
  }

  /** The error output (with its action) of a cell, if it has one on screen. */
  errorOf(cell: CellWidget): T | null {
    return [...this.live].find(output => cell.node.contains(output.node)) ?? null;
  }

  /** The notebook cell holding `node`, if any (an output view or a console holds none). */
  cellOf(node: HTMLElement): CellRef | null {
    let found: CellRef | null = null;
    this.notebooks.forEach(panel => {
      const index = found ? -1 : panel.content.widgets.findIndex(c => c.node.contains(node));
      if (index >= 0) {
        found = { panel, cell: panel.content.widgets[index], index };
      }
    });
    return found;
  }
}
