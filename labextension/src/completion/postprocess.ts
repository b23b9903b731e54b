/**
 * What of the model's raw output is worth showing as ghost text.
 *
 * Pure functions of the raw text and the code around the cursor, applied to the whole text
 * received so far on every streamed chunk: `done` says the rest of the stream cannot change
 * what is shown, so the request can stop.
 */

import { MultilinePolicy } from '../settings';

export interface CursorContext {
  /** Text of the cursor's line before the cursor. */
  lineBefore: string;
  /** Text of the cursor's line after the cursor. */
  lineAfter: string;
  /** Everything after the cursor (the rest of the cell or file). */
  after: string;
  multiline: MultilinePolicy;
}

export interface Processed {
  text: string;
  done: boolean;
}

const indentOf = (line: string): number => line.length - line.trimStart().length;

/** Whether a block (several lines) may be suggested here. */
export function allowsBlock(ctx: CursorContext): boolean {
  if (ctx.multiline === 'never') {
    return false;
  }
  if (ctx.lineAfter.trim() !== '') {
    return false; // mid-line: complete the line only
  }
  if (ctx.multiline === 'always') {
    return true;
  }
  const before = ctx.lineBefore.trimEnd();
  return before === '' || before.endsWith(':');
}

export function postprocess(raw: string, ctx: CursorContext): Processed {
  let text = raw;
  let done = false;
  if (!allowsBlock(ctx)) {
    const newline = text.indexOf('\n');
    if (newline >= 0) {
      text = text.slice(0, newline);
      done = true;
    }
    const rest = ctx.lineAfter.trim();
    if (rest && text.trimEnd().endsWith(rest)) {
      // The model closed what is already there, e.g. `)` after the cursor.
      text = text.trimEnd().slice(0, text.trimEnd().length - rest.length);
    }
    return finish(text, done);
  }

  const lines = text.split('\n');
  const kept: string[] = [lines[0]];
  const opensBlock = ctx.lineBefore.trimEnd().endsWith(':');
  const cursorIndent = indentOf(ctx.lineBefore);
  // Lines after the first belong to the suggestion while they stay in the block's scope.
  const minIndent = opensBlock ? cursorIndent + 1 : cursorIndent;
  const repeated = firstCodeLine(ctx.after);
  let blanks = 0;
  // The last line may still be arriving; judge it only once the stream has moved past it.
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const complete = i < lines.length - 1;
    if (line.trim() === '') {
      blanks += 1;
      if (blanks >= 2) {
        done = true;
        break;
      }
      kept.push(line);
      continue;
    }
    blanks = 0;
    if (complete || line.length > minIndent) {
      if (indentOf(line) < minIndent) {
        done = true;
        break;
      }
    }
    if (complete && repeated !== null && line.trim() === repeated) {
      done = true; // the suggestion started repeating the code after the cursor
      break;
    }
    kept.push(line);
  }
  if (!opensBlock && repeated !== null && lines[0].trim() === repeated && lines[0].trim()) {
    return { text: '', done: true };
  }
  return finish(kept.join('\n'), done);
}

function firstCodeLine(after: string): string | null {
  for (const line of after.split('\n')) {
    if (line.trim()) {
      return line.trim();
    }
  }
  return null;
}

function finish(text: string, done: boolean): Processed {
  const trimmed = done ? text.trimEnd() : text;
  return { text: trimmed.trim() === '' ? '' : trimmed, done };
}

/** The first word of a suggestion (with the spaces before it): what "accept word" inserts. */
export function firstWord(text: string): string {
  const match = /^\s*(\w+|[^\w\s]+)/.exec(text);
  return match ? match[0] : text;
}

/** The first line of a suggestion, with its line break when more follows. */
export function firstLine(text: string): string {
  const newline = text.indexOf('\n');
  if (newline < 0) {
    return text;
  }
  // A suggestion that starts with a line break accepts through the next line's content.
  if (text.slice(0, newline).trim() === '') {
    const next = text.indexOf('\n', newline + 1);
    return next < 0 ? text : text.slice(0, next + 1);
  }
  return text.slice(0, newline + 1);
}
