/**
 * `npm run check:client` (CI runs it): build @sigma-stream/client, pack it as a
 * player team would get it, and lint what they would get:
 *   publint --strict             package.json fields, exports, files in the tarball
 *   attw --profile esm-only      types resolve for node16 (ESM) and bundlers; ESM-only
 *                                by design, so CommonJS require() and node10 are not judged
 *   size-limit                   the budget in .size-limit.js (core <= 8 KB min+gzip)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const bin = (name) => join(here, '../../node_modules/.bin', name);
const run = (cmd, args) => execFileSync(cmd, args, { cwd: here, stdio: 'inherit' });

const out = mkdtempSync(join(tmpdir(), 'sigma-client-pack-'));
try {
  run(process.execPath, [join(here, 'build.mjs')]);
  run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', out]);
  const tarball = join(
    out,
    readdirSync(out).find((f) => f.endsWith('.tgz')),
  );
  run(bin('publint'), ['--strict']);
  run(bin('attw'), [tarball, '--profile', 'esm-only', '--format', 'table-flipped']);
  run(bin('size-limit'), []);
} finally {
  rmSync(out, { recursive: true, force: true });
}
