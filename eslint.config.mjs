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
  { files: ['**/*.mjs', '**/*.js'], extends: [tseslint.configs.disableTypeChecked] },
);
