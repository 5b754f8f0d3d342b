/**
 * `npm test`: starts one DynamoDB Local for the whole run, then node's test
 * runner over test/*.test.ts (or the files given), each file in its own
 * process. Every gateway a test starts creates its own table.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { startDynamoLocal } from './helpers/dynamodb-local.js';

const started = Date.now();
// `npm test -- test/a.test.ts --test-name-pattern=x`: files and node test-runner flags pass through.
const args = process.argv.slice(2);
const flags = args.filter((a) => a.startsWith('--'));
const named = args.filter((a) => !a.startsWith('--'));
const files = named.length > 0
  ? named
  : readdirSync(new URL('.', import.meta.url)).filter((f) => f.endsWith('.test.ts')).sort().map((f) => `test/${f}`);

// Node 20 here (the image runs a current LTS): the SDK's notice would repeat in every file's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
process.stdout.write(`starting DynamoDB Local...\n`);
const local = await startDynamoLocal();
process.stdout.write(`DynamoDB Local at ${local.endpoint} (${Date.now() - started} ms); running ${files.length} test files\n`);

const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${process.env.TEST_CONCURRENCY ?? '2'}`, ...flags, ...files],
  { stdio: 'inherit', env: { ...process.env, SIGMA_TEST_DYNAMODB_ENDPOINT: local.endpoint } },
);
const stop = (): void => {
  child.kill('SIGTERM');
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
const code = await new Promise<number>((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
await local.stop();
process.stdout.write(`tests finished in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.exit(code);
