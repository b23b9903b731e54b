/**
 * The proposal under a traceback: a read-only diff that grows as the fix streams (CodeMirror's
 * unified merge view, on JupyterLab's own @codemirror/state and @codemirror/view), then Accept
 * and Reject. In the hints mode, the explanation as text.
 */

import { getOriginalDoc, originalDocChangeEffect, unifiedMergeView } from '@codemirror/merge';
import { ChangeSet, Compartment, EditorState, Extension, StateEffect } from '@codemirror/state';
import { EditorView } from '@codemirror/view';
import { jupyterTheme } from '@jupyterlab/codemirror';

import { FixProposal, minimalEdit } from './proposal';

export interface FixPanelActions {
  accept: (text: string) => void;
  stop: () => void;
  close: () => void;
}

function button(
  label: string,
  title: string,
  action: () => void,
  accept = false
): HTMLButtonElement {
  const element = document.createElement('button');
  element.className = `jp-Button jp-mod-styled ${accept ? 'jp-mod-accept' : 'jp-mod-reject'}`;
  element.textContent = label;
  element.title = title;
  element.addEventListener('click', event => {
    event.stopPropagation();
    action();
  });
  return element;
}

export class FixPanel {
  readonly node = document.createElement('div');
  private readonly status = document.createElement('span');
  private readonly text = document.createElement('div');
  private readonly acceptButton: HTMLButtonElement;
  private readonly stopButton: HTMLButtonElement;
  private readonly closeButton: HTMLButtonElement;
  private readonly view: EditorView | null = null;
  private readonly editable = new Compartment();
  private settled = false; // the final proposal is shown: what the user edits stays

  constructor(
    readonly proposal: FixProposal,
    actions: FixPanelActions,
    language: Extension | null
  ) {
    this.node.className = 'jp-codestral-FixPanel';
    this.node.dataset.mode = proposal.mode;
    const header = document.createElement('div');
    header.className = 'jp-codestral-FixPanel-header';
    const title = document.createElement('span');
    title.className = 'jp-codestral-FixPanel-title';
    title.textContent = 'Codestral';
    this.status.className = 'jp-codestral-FixPanel-status';
    header.append(title, this.status);
    this.node.append(header);

    if (proposal.mode === 'fix') {
      this.view = new EditorView({
        parent: this.node,
        state: EditorState.create({
          doc: '',
          extensions: [
            jupyterTheme,
            language ?? [],
            this.editable.of(EditorView.editable.of(false)),
            unifiedMergeView({
              original: proposal.compared,
              mergeControls: false,
              gutter: true,
              highlightChanges: true,
              syntaxHighlightDeletions: true
            })
          ]
        })
      });
      this.view.dom.classList.add('jp-codestral-FixPanel-diff');
    } else {
      this.text.className = 'jp-codestral-FixPanel-explanation';
      this.node.append(this.text);
    }

    const buttons = document.createElement('div');
    buttons.className = 'jp-codestral-FixPanel-buttons';
    this.stopButton = button('Stop', 'Stop the request', () => actions.stop());
    this.acceptButton = button(
      'Accept',
      'Replace the cell with this (one undo step)',
      () => actions.accept(this.proposedText()),
      true
    );
    this.closeButton = button(
      proposal.mode === 'fix' ? 'Reject' : 'Close',
      'Leave the cell as it is',
      () => actions.close()
    );
    buttons.append(this.stopButton, this.acceptButton, this.closeButton);
    this.node.append(buttons);
    this.update();
  }

  /** Show the proposal as it stands now. */
  update(): void {
    const proposal = this.proposal;
    const streaming = proposal.state === 'streaming';
    this.node.dataset.state = proposal.state;
    this.node.dataset.cutOff = String(proposal.cutOff);
    this.status.textContent = proposal.summary;
    if (this.view && !this.settled) {
      // Final once done or stopped; a failure may still be retried (the engine was loading).
      this.settled = proposal.state === 'done' || proposal.state === 'stopped';
      const state = this.view.state;
      const effects: StateEffect<unknown>[] = [];
      const compared = getOriginalDoc(state).toString();
      if (compared !== proposal.compared) {
        const edit = ChangeSet.of(minimalEdit(compared, proposal.compared), compared.length);
        effects.push(originalDocChangeEffect(state, edit));
      }
      if (!streaming) {
        // Done: the user may touch up an acceptable proposal before accepting it.
        effects.push(this.editable.reconfigure(EditorView.editable.of(proposal.acceptable)));
      }
      const current = state.doc.toString();
      const changes = current === proposal.text ? [] : minimalEdit(current, proposal.text);
      this.view.dispatch({ changes, effects });
    } else if (!this.view) {
      this.text.textContent = proposal.text;
    }
    this.stopButton.hidden = !streaming;
    this.acceptButton.hidden = proposal.mode !== 'fix' || proposal.state !== 'done';
    this.acceptButton.disabled = !proposal.acceptable;
  }

  /** What Accept applies: the diff editor's text (the proposal, touched up or not). */
  proposedText(): string {
    return this.view ? this.view.state.doc.toString() : this.proposal.text;
  }

  dispose(): void {
    this.view?.destroy();
    this.node.remove();
  }
}
