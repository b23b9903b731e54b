/** Which names the kernel-facts probe asks about (free of JupyterLab, unit-tested). */

const IDENTIFIER = /\b[A-Za-z_][A-Za-z0-9_]*\b/g;
const MAX_NAMES = 400;
/** Names the notebook's code mentions: the cell just run first, then the others in order. */
export function namesToProbe(sources: string[], first: string): string[] {
  const names = new Set<string>();
  for (const source of [first, ...sources]) {
    for (const match of source.matchAll(IDENTIFIER)) {
      if (!match[0].startsWith('_')) {
        names.add(match[0]);
      }
    }
  }
  return [...names].slice(0, MAX_NAMES);
}
