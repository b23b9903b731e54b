/** What happens when the active notebook cell changes: warm the engine's prompt cache for it,
 * and ask for a block after Enter on an indented line. */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { CodestralProvider } from './provider';

export function watchActiveCell(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker,
  provider: CodestralProvider
): void {
  // Warm the engine's prompt cache when a code cell gains focus, and ask for a block after
  // Enter on an indented line (JupyterLab never triggers on a blank line by itself).
  let watched: { disconnect: () => void } | null = null;
  let warmTimer: ReturnType<typeof setTimeout> | null = null;
  const onCellChanged = (tracker: INotebookTracker) => {
    watched?.disconnect();
    watched = null;
    const panel = tracker.currentWidget;
    const cell = tracker.activeCell;
    if (!panel || !cell || cell.model.type !== 'code') {
      return;
    }
    const shared = cell.model.sharedModel;
    const onChange = (_: unknown, change: { sourceChange?: { insert?: string }[] | null }) => {
      if (!provider.settings.enabled || !provider.settings.triggerOnIndent) {
        return;
      }
      const inserted = (change.sourceChange ?? []).map(d => d.insert ?? '').join('');
      if (/^\n[ \t]+$/.test(inserted)) {
        setTimeout(() => void app.commands.execute('inline-completer:invoke'), 0);
      }
    };
    shared.changed.connect(onChange);
    watched = { disconnect: () => shared.changed.disconnect(onChange) };
    if (provider.settings.warmOnFocus) {
      if (warmTimer) {
        clearTimeout(warmTimer);
      }
      warmTimer = setTimeout(() => {
        const editor = cell.editor;
        if (tracker.activeCell !== cell || !editor) {
          return;
        }
        const index = editor.getOffsetAt(editor.getCursorPosition()); // UTF-16 units
        void provider.warm(panel as NotebookPanel, shared.getSource(), index);
      }, 300);
    }
  };
  notebooks.activeCellChanged.connect(() => onCellChanged(notebooks));
}
