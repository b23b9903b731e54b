import { describe, expect, it } from 'vitest';

import { namesToProbe } from '../src/context/probeNames';

describe('names the kernel-facts probe asks about', () => {
  it('puts the cell just run first, then the notebook in order, once each', () => {
    const names = namesToProbe(
      ['import pandas as pd\nsales = pd.read_csv(path)', 'sales.head()'],
      'total = sales.amount.sum()'
    );
    expect(names.slice(0, 5)).toEqual(['total', 'sales', 'amount', 'sum', 'import']);
    expect(names).toContain('pd');
    expect(new Set(names).size).toBe(names.length);
  });

  it('skips private names and stays bounded', () => {
    expect(namesToProbe(['_hidden = 1\nshown = 2'], '')).toEqual(['shown']);
    const many = Array.from({ length: 1000 }, (_, i) => `name_${i} = ${i}`).join('\n');
    expect(namesToProbe([many], '').length).toBe(400);
  });
});
