import { describe, expect, it } from 'vitest';

import { codePointOffset, utf16Index } from '../src/offsets';

describe('cursor offsets: code points on the wire, UTF-16 in JavaScript', () => {
  const cell = "s = '😀'\nx = ";  // the emoji is one code point, two UTF-16 units

  it('maps the end of a cell after an emoji both ways', () => {
    expect(cell.length).toBe(13);
    expect([...cell].length).toBe(12);
    expect(codePointOffset(cell, cell.length)).toBe(12); // what the server's Python reads
    expect(utf16Index(cell, 12)).toBe(13);
    expect(cell.slice(0, utf16Index(cell, 12))).toBe(cell);
  });

  it('maps positions mid-cell, before and after non-BMP characters', () => {
    const text = 'a😀b𝑥c\nd';
    for (let cp = 0; cp <= [...text].length; cp++) {
      const index = utf16Index(text, cp);
      expect(codePointOffset(text, index)).toBe(cp);
      expect([...text.slice(0, index)].length).toBe(cp);
    }
    expect(utf16Index('abc', 2)).toBe(2); // BMP text: the same number
    expect(utf16Index('ab', 9)).toBe(2); // past the end: the end
  });
});
