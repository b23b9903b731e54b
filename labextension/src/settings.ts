/** The extension's settings (Settings > Codestral) and their defaults, which are the schema's
 * (`schema/plugin.json`; test/settings.test.ts fails when the two differ). */

/** Where a suggestion may run over several lines (the `multiline` setting). */
export type MultilinePolicy = 'auto' | 'always' | 'never';

export interface Settings {
  enabled: boolean;
  debounceMs: number;
  maxTokens: number;
  temperature: number;
  contextTokens: number;
  timeBudgetMs: number;
  multiline: MultilinePolicy;
  disabledLanguages: string[];
  candidates: number;
  warmOnFocus: boolean;
  triggerOnIndent: boolean;
  kernelFacts: boolean;
  projectContext: boolean;
  recentFiles: boolean;
  fixAction: boolean;
}

export const DEFAULT_SETTINGS: Settings = {
  enabled: true,
  debounceMs: 150,
  maxTokens: 64,
  temperature: 0,
  contextTokens: 2048,
  timeBudgetMs: 1500,
  multiline: 'auto',
  disabledLanguages: [],
  candidates: 1,
  warmOnFocus: true,
  triggerOnIndent: true,
  kernelFacts: true,
  projectContext: true,
  recentFiles: true,
  fixAction: true
};
