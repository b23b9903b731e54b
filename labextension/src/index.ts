/**
 * jupyter-codestral: streaming fill-in-the-middle ghost text from Codestral, with the whole
 * notebook as context, for JupyterLab and Notebook 7.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { Prec } from '@codemirror/state';
import { EditorView, keymap } from '@codemirror/view';
import { CodeEditor } from '@jupyterlab/codeeditor';
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import { IEditorTracker } from '@jupyterlab/fileeditor';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { getStatus, startEngine } from './api';
import { firstLine, firstWord } from './postprocess';
import { CodestralProvider, Settings } from './provider';
import { StatusItem } from './status';
import { ErrorReporter } from './errorReporter';
import { CompletionError } from './wire';

const PLUGIN_ID = 'jupyter-codestral:plugin';

namespace CommandIDs {
  export const acceptWord = 'codestral:accept-word';
  export const acceptLine = 'codestral:accept-line';
  export const toggle = 'codestral:toggle';
  export const status = 'codestral:show-status';
  export const pull = 'codestral:pull';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Codestral ghost text: streaming fill-in-the-middle completions.',
  autoStart: true,
  requires: [ICompletionProviderManager],
  optional: [
    INotebookTracker,
    IEditorTracker,
    ISettingRegistry,
    IStatusBar,
    IEditorExtensionRegistry,
    ICommandPalette
  ],
  activate: (
    app: JupyterFrontEnd,
    manager: ICompletionProviderManager,
    notebooks: INotebookTracker | null,
    editors: IEditorTracker | null,
    settingRegistry: ISettingRegistry | null,
    statusBar: IStatusBar | null,
    editorExtensions: IEditorExtensionRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const status = new StatusItem();
    const errors = new ErrorReporter(({ message, fix }) =>
      Notification.error(`Codestral: ${message}${fix ? ` ${fix}` : ''}`, { autoClose: 10000 })
    );
    const provider = new CodestralProvider({
      onFinished: suggestion => {
        errors.succeeded();
        status.finished(suggestion);
      },
      onError: (error: CompletionError) => {
        errors.report(error.info);
        void status.refresh();
      }
    });
    manager.registerInlineProvider(provider);

    if (statusBar) {
      statusBar.registerStatusItem('jupyter-codestral:status', {
        item: status,
        align: 'left',
        rank: 100
      });
    }
    void status.refresh();

    const activeEditor = (): CodeEditor.IEditor | null => {
      const current = app.shell.currentWidget;
      if (notebooks?.currentWidget && current === notebooks.currentWidget) {
        return notebooks.activeCell?.editor ?? null;
      }
      if (editors?.currentWidget && current === editors.currentWidget) {
        return editors.currentWidget.content.editor;
      }
      return notebooks?.activeCell?.editor ?? null;
    };

    const acceptPart = (part: (text: string) => string) => {
      const editor = activeEditor();
      if (!editor) {
        return;
      }
      const source = editor.model.sharedModel.getSource();
      const offset = editor.getOffsetAt(editor.getCursorPosition());
      const visible = provider.visibleSuggestion(source.slice(0, offset));
      if (!visible) {
        return;
      }
      const piece = part(visible);
      editor.model.sharedModel.updateSource(offset, offset, piece);
      editor.setCursorPosition(editor.getPositionAt(offset + piece.length)!);
    };

    app.commands.addCommand(CommandIDs.acceptWord, {
      label: 'Codestral: Accept Next Word of the Suggestion',
      execute: () => acceptPart(firstWord)
    });
    app.commands.addCommand(CommandIDs.acceptLine, {
      label: 'Codestral: Accept Next Line of the Suggestion',
      execute: () => acceptPart(firstLine)
    });
    app.commands.addCommand(CommandIDs.toggle, {
      label: 'Codestral: Ghost Text',
      isToggled: () => provider.settings.enabled,
      execute: async () => {
        if (settingRegistry) {
          await settingRegistry.set(PLUGIN_ID, 'enabled', !provider.settings.enabled);
        } else {
          provider.applySettings({ enabled: !provider.settings.enabled });
        }
      }
    });
    app.commands.addCommand(CommandIDs.status, {
      label: 'Codestral: Start the Engine and Show Status',
      execute: async () => {
        await startEngine();
        await status.refresh();
      }
    });

    app.commands.addCommand(CommandIDs.pull, {
      label: 'Codestral: Download the Codestral Weights (in a Terminal)',
      caption: 'Runs `codestral-engine pull`: shows the licence, downloads with progress.',
      execute: async () => {
        const { pull_command } = await getStatus();
        const terminal = await app.commands.execute('terminal:create-new');
        const session = terminal?.content?.session;
        if (!session) {
          Notification.error(`Codestral: no terminal here; run \`${pull_command}\` in one.`);
          return;
        }
        const send = () => session.send({ type: 'stdin', content: [`${pull_command}\n`] });
        if (session.connectionStatus === 'connected') {
          send();
        } else {
          const ready = (_: unknown, state: string) => {
            if (state === 'connected') {
              session.connectionStatusChanged.disconnect(ready);
              send();
            }
          };
          session.connectionStatusChanged.connect(ready);
        }
      }
    });

    for (const command of [CommandIDs.toggle, CommandIDs.status, CommandIDs.pull]) {
      palette?.addItem({ command, category: 'Codestral' });
    }

    // Partial accept, bound in CodeMirror itself: its own Ctrl+Right / Ctrl+Down would take the
    // keys before JupyterLab's shortcuts see them. Without a visible suggestion they keep their
    // usual meaning.
    if (editorExtensions) {
      const whenSuggesting = (command: string) => (view: EditorView) => {
        if (!view.dom.closest('.jp-mod-inline-completer-active')) {
          return false;
        }
        void app.commands.execute(command);
        return true;
      };
      editorExtensions.addExtension({
        name: 'jupyter-codestral:partial-accept',
        factory: () =>
          EditorExtensionRegistry.createImmutableExtension(
            Prec.highest(
              keymap.of([
                { key: 'Mod-ArrowRight', run: whenSuggesting(CommandIDs.acceptWord) },
                { key: 'Mod-ArrowDown', run: whenSuggesting(CommandIDs.acceptLine) }
              ])
            )
          )
      });
    }

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
          const offset = editor.getOffsetAt(editor.getCursorPosition());
          void provider.warm(panel as NotebookPanel, shared.getSource(), offset);
        }, 300);
      }
    };
    notebooks?.activeCellChanged.connect(() => onCellChanged(notebooks));

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const apply = () => {
          provider.applySettings(settings.composite as unknown as Partial<Settings>);
          status.setEnabled(provider.settings.enabled);
          app.commands.notifyCommandChanged(CommandIDs.toggle);
        };
        apply();
        settings.changed.connect(apply);
      });
    }
  }
};

export default plugin;
