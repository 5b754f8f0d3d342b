// ESLint flat config: `npm run lint` runs it with --max-warnings=0, so every rule here is an error that CI stops on.
// Formatting is prettier's job (.prettierrc.json); no rule below is about layout.
//
// Typed rules (recommendedTypeChecked) read tsconfig.test.json, which covers src/ and test/. typescript-eslint needs
// the TypeScript 6 compiler API, which TypeScript 7 does not ship: package.json installs both side by side,
// `typescript` (the API, from @typescript/typescript6) and `@typescript/native` (TypeScript 7, which owns `tsc`).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

// The few Node globals the plain .js/.mjs files use (the .ts files get theirs from @types/node through the type checker).
const nodeGlobals = Object.fromEntries(
  ['process', 'console', 'Buffer', 'URL', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'performance'].map(
    (name) => [name, 'readonly'],
  ),
);

export default defineConfig(
  { ignores: ['node_modules/', '**/dist/', 'test-output/', 'bench-output/'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // `_name` marks a binding that is there on purpose (a destructured field left out, a callback's unused argument).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // An `async` function without `await` is how a callback meets a `() => Promise<T>` type; nothing to fix there.
      '@typescript-eslint/require-await': 'off',
      // prom-client calls `collect()` with `this` bound to the metric, so reaching the Metrics object needs an alias.
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['self'] }],
      // `${[1, 2]}` reads "1,2": arrays are fine in messages; objects ('[object Object]') and nullish values are not.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowArray: true }],
      // node:test's describe()/test() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'suite', 'it', 'test'] }] },
      ],
    },
  },
  {
    // Tests walk parsed YAML, JSON and /metrics text whose shape the test itself asserts; typing every manifest
    // field would be ceremony. src/ keeps the full no-unsafe-* and no-explicit-any checks.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    // Plain JavaScript (this file, the bench's .mjs probes): no type information, Node globals.
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: nodeGlobals },
  },
);
