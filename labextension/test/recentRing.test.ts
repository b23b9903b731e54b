import { describe, expect, it } from 'vitest';

import { chunkAround, CHUNK_LINES, MAX_CHUNKS, RecentRing } from '../src/context/recentRing';

describe('the ring of recently seen code', () => {
  it('puts edited chunks before viewed ones, newest first, without repeats', () => {
    const ring = new RecentRing();
    ring.add({ key: 'a#1', path: 'a.ipynb', text: 'alpha = 1', edited: false });
    ring.add({ key: 'b#1', path: 'b.ipynb', text: 'beta = 2', edited: true });
    ring.add({ key: 'c.py:0', path: 'c.py', text: 'gamma = 3', edited: false });
    ring.add({ key: 'd#1', path: 'd.ipynb', text: 'beta = 2', edited: false }); // same text
    expect(ring.chunksFor('x.ipynb').map(c => c.text)).toEqual([
      'beta = 2',
      'gamma = 3',
      'alpha = 1'
    ]);
    // The same place again replaces its chunk; the document asking is left out.
    ring.add({ key: 'a#1', path: 'a.ipynb', text: 'alpha = 10', edited: true });
    expect(ring.chunksFor('c.py').map(c => c.text)).toEqual(['alpha = 10', 'beta = 2']);
    ring.add({ key: 'e#1', path: 'e.ipynb', text: '   ', edited: true }); // blank: not kept
    expect(ring.chunksFor(undefined)).toHaveLength(3);
  });

  it('is bounded', () => {
    const ring = new RecentRing();
    for (let i = 0; i < MAX_CHUNKS + 5; i++) {
      ring.add({ key: `k${i}`, path: `f${i}.py`, text: `x${i} = ${i}`, edited: i % 2 === 0 });
    }
    const chunks = ring.chunksFor(undefined);
    expect(chunks).toHaveLength(MAX_CHUNKS);
    expect(chunks[0].text).toBe(`x20 = 20`); // the newest edited
  });

  it('cuts a chunk around the cursor at stable block boundaries', () => {
    const text = Array.from({ length: 200 }, (_, i) => `line_${i}`).join('\n');
    const near = chunkAround(text, 85);
    expect(near.text.split('\n')).toHaveLength(CHUNK_LINES);
    expect(near.text).toContain('line_85');
    expect(chunkAround(text, 81)).toEqual(near); // the same block: the same chunk
    expect(chunkAround('a\nb', 1).text).toBe('a\nb');
  });
});
