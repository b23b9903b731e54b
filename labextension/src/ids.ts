/** The plugin's and the commands' ids, and the arguments the commands take: what the rooms
 * that register commands share (index.ts, commands.ts, fix/). */

export const PLUGIN_ID = 'jupyter-codestral:plugin';

export namespace CommandIDs {
  export const acceptWord = 'codestral:accept-word';
  export const acceptLine = 'codestral:accept-line';
  export const toggle = 'codestral:toggle';
  export const status = 'codestral:show-status';
  export const pull = 'codestral:pull';
  export const fixCell = 'codestral:fix-cell';
}

/** What every Codestral command takes: no arguments (its `describedBy`). */
export const NO_ARGS = { args: { type: 'object', properties: {} } };
