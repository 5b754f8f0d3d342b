/**
 * `node --import tsx test/bench/render.ts [dir]`: writes <dir>/report.md
 * again from <dir>/report.json (default docs/bench), with the report code
 * as it is now: a change to test/bench/report.ts needs no new run.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ROOT } from '../helpers/gateway.js';
import { markdown, type Results } from './report.js';

const dir = resolve(ROOT, process.argv[2] ?? 'docs/bench');
const { targets: _targets, ...results } = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as Results & { targets: unknown };
writeFileSync(join(dir, 'report.md'), markdown(results, 'latency-cdf.svg'));
process.stdout.write(`${join(dir, 'report.md')} written from report.json\n`);
