/**
 * Builds @sigma-stream/client from the SDK's sources in src/client/ (no copy
 * of the code lives here):
 *
 *   dist/index.js            ESM for bundlers and Node (readable, with a source map)
 *   dist/browser/index.js    the same entry points minified for browsers (<script type="module">)
 *   dist/adapters/<name>.js  one entry per src/client/adapters/<name>.ts, when there are any
 *   dist/types/...           declarations from tsc (layout of src/, so imports outside
 *                            src/client/, such as ../close-codes.js, keep their relative paths)
 *
 * Entry points are index.ts plus whatever adapters exist; everything they
 * import is bundled, so files added or moved under src/client/ need no change
 * here. Shared code between entry points goes into chunks (splitting), so an
 * adapter and the core share one StreamLease class. A bare import (a package)
 * fails the build: the SDK has no runtime dependencies.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, '../../src/client');
const dist = join(here, 'dist');
const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));

const adapterDir = join(src, 'adapters');
const adapters = existsSync(adapterDir)
  ? readdirSync(adapterDir)
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && !/\.test\.ts$/.test(f))
      .sort()
  : [];
if (adapters.length > 0 && !pkg.exports['./adapters/*']) {
  throw new Error(`src/client/adapters/ has ${adapters.join(', ')}: add "./adapters/*" to the exports of packages/client/package.json`);
}
const entryPoints = [
  { in: join(src, 'index.ts'), out: 'index' },
  ...adapters.map((f) => ({ in: join(adapterDir, f), out: `adapters/${basename(f, '.ts')}` })),
];

/** The SDK must stay dependency-free and free of Node built-ins, so it runs in any browser. */
const noPackages = {
  name: 'no-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => ({
      errors: [{ text: `${args.path} imported by ${args.importer}: the player SDK has no runtime dependencies and no Node built-ins` }],
    }));
  },
};

const common = {
  entryPoints,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'neutral',
  chunkNames: 'chunks/[name]-[hash]',
  legalComments: 'none',
  sourcemap: true,
  logLevel: 'warning',
  plugins: [noPackages],
  banner: { js: `/* ${pkg.name} ${pkg.version} */` },
};

rmSync(dist, { recursive: true, force: true });
await build({ ...common, outdir: dist, target: 'es2022' });
await build({ ...common, outdir: join(dist, 'browser'), target: 'es2020', minify: true });

// Declarations: the repository's own `tsc` (a devDependency of the repo, not of this package).
const tsc = join(here, '../../node_modules/.bin/tsc');
execFileSync(tsc, ['-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });
if (!existsSync(join(dist, 'types/client/index.d.ts'))) throw new Error('tsc wrote no dist/types/client/index.d.ts');
