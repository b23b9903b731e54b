// ESLint as the JupyterLab extension template sets it up (flat config), with prettier's
// formatting checked as an eslint rule. `jlpm lint:check` runs it (and .ci/run does).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';
import prettierRecommended from 'eslint-plugin-prettier/recommended';
import globals from 'globals';
import jupyterPlugin from '@jupyter/eslint-plugin';

export default defineConfig([
  {
    ignores: ['node_modules', 'lib', 'coverage', '**/*.js', '**/*.d.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    plugins: {
      jupyter: jupyterPlugin
    }
  },
  jupyterPlugin.configs.recommended,
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      globals: {
        ...globals.browser,
        ...globals.es2015,
        ...globals.node
      },
      parserOptions: {
        sourceType: 'module'
      }
    },
    rules: {
      // The template's `I` prefix for interfaces is left out: the wire types mirror the Python
      // models name for name (tests/test_lab_wire.py pairs them by name).
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error',
      // The extension is in English only: no ITranslator is wired (translation would be a
      // feature of its own).
      'jupyter/no-untranslated-string': 'off'
    }
  },
  {
    // Everything the plugin imports is registered during activation (the provider, the status
    // item, the error outputs' renderer): nothing is left to load lazily.
    files: ['src/index.ts'],
    rules: { 'jupyter/prefer-lazy-imports': 'off' }
  },
  prettierRecommended
]);
