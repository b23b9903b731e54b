/**
 * A ring of code the user recently edited or viewed in other documents of this JupyterLab
 * (llama.vim keeps 16 such chunks; Copilot sends neighbouring tabs). A chunk is taken when a
 * document loses the focus: the active cell of a notebook, or the lines around a file's cursor.
 * Edited chunks come before viewed ones, newest first; no two share a place or a text. The
 * ring changes only when the user moves to another document, so the prompt's header (and the
 * engine's prompt cache) stays put while the user types.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { DocumentWidget } from '@jupyterlab/docregistry';
import { FileEditor } from '@jupyterlab/fileeditor';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { chunkAround, RecentRing } from './recentRing';
import { RecentChunk } from '../client/wire';
import { Settings } from '../settings';

/** Watches the shell: a document that loses the focus leaves a chunk in the ring. */
export class RecentCode {
  private on = true;
  private ring = new RecentRing();
  private edited = new WeakSet<Widget>();
  private watched = new WeakSet<Widget>();

  constructor(app: JupyterFrontEnd) {
    const shell = app.shell as JupyterFrontEnd.IShell & {
      currentChanged?: { connect: (slot: (sender: unknown, args: any) => void) => void };
    };
    shell.currentChanged?.connect(
      (_, args: { oldValue: Widget | null; newValue: Widget | null }) => {
        if (args.oldValue && this.on) {
          this.leave(args.oldValue);
        }
        if (args.newValue) {
          this.watch(args.newValue);
        }
      }
    );
  }

  /** The "Recently seen code in the context" setting: off forgets what the ring holds. */
  applySettings(settings: Pick<Settings, 'recentFiles'>): void {
    if (!settings.recentFiles) {
      this.ring = new RecentRing();
    }
    this.on = settings.recentFiles;
  }

  chunksFor(path: string | undefined): RecentChunk[] {
    return this.on ? this.ring.chunksFor(path) : [];
  }

  /** Remember whether the document is edited while it has the focus. */
  private watch(widget: Widget): void {
    this.edited.delete(widget);
    if (this.watched.has(widget) || !(widget instanceof DocumentWidget)) {
      return;
    }
    this.watched.add(widget);
    widget.context.model.contentChanged.connect(() => {
      if (widget.isVisible) {
        this.edited.add(widget);
      }
    });
  }

  private leave(widget: Widget): void {
    if (widget.isDisposed || !(widget instanceof DocumentWidget)) {
      return;
    }
    const path = widget.context.path;
    const edited = this.edited.has(widget);
    if (widget instanceof NotebookPanel) {
      const cell = widget.content.activeCell;
      if (!cell || cell.model.type !== 'code') {
        return;
      }
      const line = cell.editor?.getCursorPosition().line ?? 0;
      const { text } = chunkAround(cell.model.sharedModel.getSource(), line);
      this.ring.add({ key: `${path}#${cell.model.id}`, path, text, edited });
    } else if (widget.content instanceof FileEditor) {
      const editor = widget.content.editor;
      const { start, text } = chunkAround(
        editor.model.sharedModel.getSource(),
        editor.getCursorPosition().line
      );
      this.ring.add({ key: `${path}:${start}`, path, text, edited });
    }
  }
}
