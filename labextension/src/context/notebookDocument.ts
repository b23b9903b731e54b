/** What the routes need to know about a notebook: its cells, language and teaching policy. */

import { NotebookPanel } from '@jupyterlab/notebook';

import { Cell } from '../client/wire';

/** Teaching: `codestral` notebook metadata turns Codestral off, or down to short hints (ghost
 * text of one short line; a fix at a traceback explains instead of rewriting the cell). */
export interface NotebookPolicy {
  enabled?: boolean;
  mode?: 'hints' | 'full';
}

/** The notebook's cells as the wire sends them; `active` replaces one cell's source (the text
 * the completer sees, which may be ahead of the model). */
export function notebookCells(
  panel: NotebookPanel,
  active?: { index: number; source: string }
): Cell[] {
  return panel.content.widgets.map((cell, index): Cell => ({
    cell_type: cell.model.type as Cell['cell_type'],
    source: index === active?.index ? active.source : cell.model.sharedModel.getSource()
  }));
}

export function notebookLanguage(panel: NotebookPanel): string {
  const metadata = (panel.model?.metadata ?? {}) as Record<string, any>;
  return metadata.language_info?.name ?? metadata.kernelspec?.language ?? 'python';
}

export function notebookPolicy(panel: NotebookPanel): NotebookPolicy {
  return (panel.model?.getMetadata('codestral') ?? {}) as NotebookPolicy;
}
