/** "Fix with Codestral" as a command (Alt+Shift+F, and the palette): the action of the active
 * cell's error output. */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { CommandIDs, NO_ARGS } from '../ids';
import { FixController } from './controller';

/** The command (Alt+Shift+F, and the palette): the action of the active cell's error. */
export function addFixCommand(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker,
  controller: FixController,
  palette: ICommandPalette | null
): void {
  const target = () => {
    const cell = notebooks.activeCell;
    const panel = notebooks.currentWidget;
    return cell && panel ? { output: controller.outputs.errorOf(cell), panel } : null;
  };
  app.commands.addCommand(CommandIDs.fixCell, {
    describedBy: NO_ARGS,
    label: () => {
      const found = target();
      const explain = found && controller.switches.policy(found.panel).mode === 'explain';
      return explain
        ? 'Codestral: Explain the Error in This Cell'
        : 'Codestral: Fix the Error in This Cell';
    },
    caption: () => {
      const found = target();
      return found && controller.switches.policy(found.panel).mode === 'explain'
        ? "Explains the error in a sentence or two, under the cell's traceback"
        : "Streams a corrected cell as a diff under the cell's traceback";
    },
    isEnabled: () => {
      const found = target();
      return !!found && controller.switches.policy(found.panel).allowed;
    },
    execute: () => {
      const found = target();
      if (!found?.output) {
        Notification.info('Codestral: this cell has no error to fix. Run it first.', {
          autoClose: 5000
        });
        return;
      }
      void found.output.start();
    }
  });
  palette?.addItem({ command: CommandIDs.fixCell, category: 'Codestral' });
}
