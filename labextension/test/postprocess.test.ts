import { describe, expect, it } from 'vitest';

import { CursorContext, firstLine, firstWord, postprocess } from '../src/completion/postprocess';

const at = (lineBefore: string, after = '', multiline: CursorContext['multiline'] = 'auto') => ({
  lineBefore,
  lineAfter: after.split('\n')[0],
  after,
  multiline
});

describe('postprocess', () => {
  it('keeps one line when the cursor is mid-line, without what follows the cursor', () => {
    const r = postprocess('x, y)\nprint(z)', at('f(', ')'));
    expect(r).toEqual({ text: 'x, y', done: true });
  });

  it('keeps one line at the end of an ordinary line', () => {
    expect(postprocess('1\ny = 2', at('x = '))).toEqual({ text: '1', done: true });
    expect(postprocess('1', at('x = '))).toEqual({ text: '1', done: false });
  });

  it('offers a block after a line ending in a colon, trimmed to its scope', () => {
    const raw = '\n    a = 1\n    return a\nprint("outside")\n';
    const r = postprocess(raw, at('def f():'));
    expect(r).toEqual({ text: '\n    a = 1\n    return a', done: true });
  });

  it('waits for a line to complete before judging its indentation', () => {
    const r = postprocess('\n    a = 1\n ', at('def f():'));
    expect(r.done).toBe(false);
    expect(r.text).toBe('\n    a = 1\n ');
  });

  it('stops where the suggestion starts repeating the code after the cursor', () => {
    const after = '\n    return total';
    const raw = 'total = sum(xs)\n    return total\n';
    const r = postprocess(raw, at('    ', after));
    expect(r).toEqual({ text: 'total = sum(xs)', done: true });
  });

  it('never shows an empty or whitespace-only suggestion', () => {
    expect(postprocess('   \n', at('x = ')).text).toBe('');
    expect(postprocess('\n\n\n', at('if x:')).text).toBe('');
  });

  it('ends a block at two blank lines', () => {
    const r = postprocess('\n    a = 1\n\n\n    b = 2', at('if x:'));
    expect(r).toEqual({ text: '\n    a = 1', done: true });
  });

  it("honours the 'never' and 'always' policies", () => {
    expect(postprocess('a\nb', at('if x:', '', 'never')).text).toBe('a');
    expect(postprocess('a\nb\n', at('x = ', '', 'always')).text).toBe('a\nb\n');
  });
});

describe('partial accept', () => {
  it('takes the next word with its leading space', () => {
    expect(firstWord(' total = 1')).toBe(' total');
    expect(firstWord('(a, b)')).toBe('(');
    expect(firstWord('')).toBe('');
  });

  it('takes the next line with its line break', () => {
    expect(firstLine('a = 1\nb = 2')).toBe('a = 1\n');
    expect(firstLine('\n    a = 1\n    b')).toBe('\n    a = 1\n');
    expect(firstLine('last')).toBe('last');
  });
});
