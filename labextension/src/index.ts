/**
 * jupyter-codestral: streaming fill-in-the-middle ghost text from Codestral, with the whole
 * notebook as context, for JupyterLab and Notebook 7.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IEditorExtensionRegistry, IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import { IEditorTracker } from '@jupyterlab/fileeditor';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { watchActiveCell } from './completion/activeCell';
import { addCommands } from './commands';
import { CommandIDs, PLUGIN_ID } from './ids';
import { ErrorReporter } from './client/errorReporter';
import { addFixCommand } from './fix/command';
import { FixController } from './fix/controller';
import { KernelFacts } from './context/kernelFacts';
import { RecentCode } from './context/recentCode';
import { CodestralProvider } from './completion/provider';
import { Settings } from './settings';
import { StatusItem } from './status/status';
import { CompletionError } from './client/wire';

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
    ICommandPalette,
    IRenderMimeRegistry,
    IEditorLanguageRegistry
  ],
  activate: (
    app: JupyterFrontEnd,
    manager: ICompletionProviderManager,
    notebooks: INotebookTracker | null,
    editors: IEditorTracker | null,
    settingRegistry: ISettingRegistry | null,
    statusBar: IStatusBar | null,
    editorExtensions: IEditorExtensionRegistry | null,
    palette: ICommandPalette | null,
    rendermime: IRenderMimeRegistry | null,
    languages: IEditorLanguageRegistry | null
  ) => {
    const status = new StatusItem();
    const errors = new ErrorReporter(({ message, fix }) =>
      Notification.error(`Codestral: ${message}${fix ? ` ${fix}` : ''}`, { autoClose: 10000 })
    );
    const kernelFacts = notebooks ? new KernelFacts(notebooks) : null;
    const recentCode = new RecentCode(app);
    const provider = new CodestralProvider(
      {
        onFinished: suggestion => {
          errors.succeeded();
          status.finished(suggestion);
        },
        onError: (error: CompletionError) => {
          errors.report(error.info);
          void status.refresh();
        }
      },
      { kernelFacts, recentCode }
    );
    manager.registerInlineProvider(provider);

    if (statusBar) {
      statusBar.registerStatusItem('jupyter-codestral:status', {
        item: status,
        align: 'left',
        rank: 100
      });
    }
    void status.refresh();

    const services = { notebooks, editors, settingRegistry, editorExtensions, palette };
    addCommands({ app, provider, status, ...services });

    let fixes: FixController | null = null;
    if (notebooks) {
      watchActiveCell(app, notebooks, provider);
      if (rendermime) {
        // "Fix with Codestral" under tracebacks: notebooks opened from now on render their
        // error outputs with it (each notebook clones this registry when it opens).
        fixes = new FixController(notebooks, languages, kernelFacts);
        const factory = fixes.rendererFactory();
        rendermime.addFactory(factory);
        // Notebooks already open cloned the registry before this: they get it too.
        notebooks.forEach(panel => panel.content.rendermime.addFactory(factory));
        addFixCommand(app, notebooks, fixes, palette);
      }
    }

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const apply = () => {
          provider.applySettings(settings.composite as unknown as Partial<Settings>);
          const current = provider.settings;
          kernelFacts?.applySettings(current);
          recentCode.applySettings(current);
          status.setEnabled(current.enabled);
          fixes?.applySettings(current);
          app.commands.notifyCommandChanged(CommandIDs.toggle);
        };
        apply();
        settings.changed.connect(apply);
      });
    }
  }
};

export default plugin;
