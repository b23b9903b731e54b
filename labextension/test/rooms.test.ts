import { readdirSync, readFileSync, statSync } from 'fs';
import { dirname, join, relative, resolve } from 'path';
import { describe, expect, it } from 'vitest';

const SRC = resolve(__dirname, '../src');

/** The rooms of src/, lowest first: a module imports only its own room and the ones before it
 * (the map in README.md's Development section). */
const ROOMS = [
  ['settings.ts', 'ids.ts'],
  ['client'],
  ['context'],
  ['completion'],
  ['fix'],
  ['status'],
  ['commands.ts', 'index.ts']
];

function rank(path: string): number {
  const top = relative(SRC, path).split(/[\\/]/)[0];
  const found = ROOMS.findIndex(room => room.includes(top) || room.includes(`${top}.ts`));
  if (found < 0) {
    throw new Error(`${relative(SRC, path)} is in no room of the map`);
  }
  return found;
}

function modules(dir: string): string[] {
  return readdirSync(dir).flatMap(name => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? modules(path) : name.endsWith('.ts') ? [path] : [];
  });
}

/** Every import of one of our modules, lazy ones included. */
function imports(path: string, text = readFileSync(path, 'utf8')): string[] {
  const specs = [...text.matchAll(/(?:from|import\()\s*'(\.[^']*)'/g)].map(m => m[1]);
  return specs.map(spec => resolve(dirname(path), spec) + '.ts');
}

/** The imports of a module that go to a room above its own. */
function upward(path: string, text?: string): string[] {
  return imports(path, text)
    .filter(target => rank(target) > rank(path))
    .map(target => `${relative(SRC, path)} -> ${relative(SRC, target)}`);
}

describe('the rooms of src/', () => {
  it('import only their own room and the rooms below it', () => {
    expect(modules(SRC).flatMap(path => upward(path))).toEqual([]);
  });

  it('are told apart: an import going up, a lazy one too, is seen', () => {
    const text = "import { StatusItem } from '../status/status';\nawait import('../fix/run');\n";
    expect(upward(join(SRC, 'client/api.ts'), text)).toEqual([
      'client/api.ts -> status/status.ts',
      'client/api.ts -> fix/run.ts'
    ]);
  });
});
