/**
 * The ring of recently seen code (see recentCode.ts), free of JupyterLab so that it is
 * unit-tested: at most MAX_CHUNKS chunks, edited before viewed, newest first, no two with the
 * same place or the same text.
 */

import { RecentChunk } from '../client/wire';

export const MAX_CHUNKS = 16;
export const CHUNK_LINES = 40;
const MAX_CHUNK_CHARS = 4000;

export interface Entry extends RecentChunk {
  key: string;
  edited: boolean;
}

/** The ring itself, free of JupyterLab (unit-tested). */
export class RecentRing {
  private entries: Entry[] = [];

  add(entry: Entry): void {
    const text = entry.text.trim();
    if (!text) {
      return;
    }
    const same = (e: Entry) => e.key === entry.key || e.text.trim() === text;
    const before = this.entries.find(same);
    const kept = this.entries.filter(e => !same(e));
    // Viewing again what was edited keeps it among the edited.
    const added = { ...entry, edited: entry.edited || (before?.edited ?? false) };
    const ordered = [added, ...kept];
    this.entries = [...ordered.filter(e => e.edited), ...ordered.filter(e => !e.edited)].slice(
      0,
      MAX_CHUNKS
    );
  }

  /** The chunks to send with a request in `path` (that document's own are left out). */
  chunksFor(path: string | undefined): RecentChunk[] {
    return this.entries.filter(e => e.path !== path).map(({ path, text }) => ({ path, text }));
  }
}

/** The lines around `line` (0-based) of `text`: at most CHUNK_LINES, cut at block boundaries
 * (multiples of CHUNK_LINES / 2) so that the same place gives the same chunk. */
export function chunkAround(text: string, line: number): { start: number; text: string } {
  const lines = text.split('\n');
  const half = CHUNK_LINES / 2;
  const start = Math.max(0, Math.min(Math.floor(line / half) * half - half / 2, lines.length));
  const chunk = lines.slice(start, start + CHUNK_LINES).join('\n');
  return { start, text: chunk.slice(0, MAX_CHUNK_CHARS) };
}
