// ESLint: typescript-eslint's recommended type-checked rules over every TypeScript file (`make lint`).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', '.tools/', '.bench/', 'build/', 'agent/native/build/'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // A callback made before the value it reads exists (a timer it clears, metrics it counts into,
      // created from parts that need the callback) holds a `let` that is assigned once, later.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // node:test's test(), describe() and it() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after'] },
          ],
        },
      ],
    },
  },
  {
    // One root logger (common/log.ts); the program's modules take its Logger type from there too.
    files: ['cli/**/*.ts', 'agent/**/*.ts', 'operator/**/*.ts', 'common/**/*.ts'],
    ignores: ['common/log.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { paths: [{ name: 'pino', message: 'import the Logger type and the logger from common/log.ts' }] },
      ],
    },
  },
  {
    // Product code a reader takes in at once (issue 25): no file over 400 lines (as `wc -l` counts them)
    // and no function over 80 lines of code; past that, split it where it has a seam.
    files: ['cli/**/*.ts', 'agent/**/*.ts', 'operator/**/*.ts', 'common/**/*.ts'],
    rules: {
      'max-lines': ['error', { max: 400, skipBlankLines: false, skipComments: false }],
      'max-lines-per-function': ['error', { max: 80, skipBlankLines: true, skipComments: true }],
    },
  },
  { files: ['**/*.mjs', '**/*.js'], extends: [tseslint.configs.disableTypeChecked] },
);
