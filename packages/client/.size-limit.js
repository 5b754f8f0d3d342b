/**
 * Size budget of @sigma-stream/client, minified and gzipped (`npm run check:client`
 * runs it after the build). The core is the browser entry plus every chunk it
 * imports; each adapter in dist/browser/adapters/ is measured on its own
 * (without the chunks it shares with the core), since a player loads one.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const browser = join(here, 'dist/browser');

/** A file and the chunks it imports statically, transitively. */
function withImports(file, seen = new Set()) {
  if (seen.has(file)) return seen;
  seen.add(file);
  const code = readFileSync(file, 'utf8');
  for (const m of code.matchAll(/(?:\bfrom|\bimport)\s*["'](\.{1,2}\/[^"']+\.js)["']/g)) {
    withImports(join(dirname(file), m[1]), seen);
  }
  return seen;
}

const rel = (f) => relative(here, f);
const checks = [
  {
    name: 'core (StreamLease, REST helpers, errors)',
    path: [...withImports(join(browser, 'index.js'))].map(rel),
    limit: '8 KB',
    gzip: true,
  },
];
const adapters = join(browser, 'adapters');
if (existsSync(adapters)) {
  for (const f of readdirSync(adapters).filter((n) => n.endsWith('.js'))) {
    checks.push({ name: `adapter ${f.replace(/\.js$/, '')}`, path: rel(join(adapters, f)), limit: '2 KB', gzip: true });
  }
}
export default checks;
