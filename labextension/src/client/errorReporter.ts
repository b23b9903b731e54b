/** The error policy: each error reaches the user once, with its fix, never per keystroke. */

import { ErrorInfo } from './wire';

/**
 * Shows each kind of error once (not once per keystroke) until a suggestion succeeds again.
 * Quiet kinds (the engine still starting) are never shown: the status bar covers them.
 */
export class ErrorReporter {
  private shown = new Set<string>();

  constructor(
    private readonly show: (error: ErrorInfo) => void,
    private readonly quiet: Set<string> = new Set(['engine_starting'])
  ) {}

  /** Returns whether the error was shown. */
  report(error: ErrorInfo): boolean {
    if (this.quiet.has(error.kind) || this.shown.has(error.kind)) {
      return false;
    }
    this.shown.add(error.kind);
    this.show(error);
    return true;
  }

  succeeded(): void {
    this.shown.clear();
  }
}
