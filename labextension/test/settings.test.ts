import { readFileSync } from 'fs';
import { describe, expect, it } from 'vitest';

import { DEFAULT_SETTINGS } from '../src/settings';

describe('the settings defaults', () => {
  it('are the schema defaults (Settings > Codestral), field for field', () => {
    const schema = JSON.parse(
      readFileSync(new URL('../schema/plugin.json', import.meta.url), 'utf8')
    );
    const defaults = Object.fromEntries(
      Object.entries(schema.properties as Record<string, { default: unknown }>).map(([k, v]) => [
        k,
        v.default
      ])
    );
    expect(DEFAULT_SETTINGS).toEqual(defaults);
  });
});
