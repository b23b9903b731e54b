/** Codestral's commands: partial accept (with their CodeMirror keys), the ghost-text toggle,
 * engine start and status, and downloading the weights in a terminal. */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { Prec } from '@codemirror/state';
import { EditorView, keymap } from '@codemirror/view';
import { CodeEditor } from '@jupyterlab/codeeditor';
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { IEditorTracker } from '@jupyterlab/fileeditor';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { getStatus, startEngine } from './client/api';
import { firstLine, firstWord } from './completion/postprocess';
import { CodestralProvider } from './completion/provider';
import { CommandIDs, NO_ARGS, PLUGIN_ID } from './ids';
import { StatusItem } from './status/status';

export interface CommandContext {
  app: JupyterFrontEnd;
  provider: CodestralProvider;
  status: StatusItem;
  notebooks: INotebookTracker | null;
  editors: IEditorTracker | null;
  settingRegistry: ISettingRegistry | null;
  editorExtensions: IEditorExtensionRegistry | null;
  palette: ICommandPalette | null;
}

export function addCommands({
  app,
  provider,
  status,
  notebooks,
  editors,
  settingRegistry,
  editorExtensions,
  palette
}: CommandContext): void {
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
    describedBy: NO_ARGS,
    label: 'Codestral: Accept Next Word of the Suggestion',
    execute: () => acceptPart(firstWord)
  });
  app.commands.addCommand(CommandIDs.acceptLine, {
    describedBy: NO_ARGS,
    label: 'Codestral: Accept Next Line of the Suggestion',
    execute: () => acceptPart(firstLine)
  });
  app.commands.addCommand(CommandIDs.toggle, {
    describedBy: NO_ARGS,
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
    describedBy: NO_ARGS,
    label: 'Codestral: Start the Engine and Show Status',
    execute: async () => {
      await startEngine();
      await status.refresh();
    }
  });

  app.commands.addCommand(CommandIDs.pull, {
    describedBy: NO_ARGS,
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
}
