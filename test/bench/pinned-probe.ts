/**
 * `node --import tsx test/bench/pinned-probe.ts [count] [flags...]`: the pinned-latency phase alone, once per
 * variant of the gateway's node flags (variants separated by `,`), to find what the tail is made of.
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { ensureTable } from '../../src/dynamo.js';
import { measureLatency, rawClient } from './admission.js';
import { dynamoLocal, javaChildPid, startGateway, startMinimalGateway, stopAll } from './procs.js';
import { PRODUCTION_TIMINGS } from './storm.js';
import { TEST_SECRET } from '../helpers/tokens.js';

const count = Number(process.argv[2] ?? 600);
const variants = (process.argv.slice(3).join(' ') || 'default').split(',').map((v) =>
  v
    .trim()
    .split(/\s+/)
    .filter((f) => f !== 'default'),
);
const pin = (pid: number, c: string) => execFileSync('taskset', ['-a', '-p', '-c', c, String(pid)], { stdio: 'ignore' });
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const local = await dynamoLocal();
const client = rawClient(local.endpoint);
const java = javaChildPid()!;
pin(java, '1');
pin(process.pid, '1');
try {
  for (let round = 0; round < 2; round++)
    for (const flags of variants) {
      const t = `probe-${Date.now()}`;
      const gw = await startGateway({
        endpoint: local.endpoint,
        table: t,
        prefix: ['taskset', '-c', '0'],
        execArgv: flags,
        env: { ...PRODUCTION_TIMINGS, ADMISSION_TIMEOUT_MS: '10000', DYNAMODB_REQUEST_TIMEOUT_MS: '5000' },
      });
      await ensureTable(client, `${t}-minimal`);
      const mg = await startMinimalGateway(local.endpoint, `${t}-minimal`, TEST_SECRET);
      pin(mg.proc.pid!, '0');
      const r = await measureLatency({
        url: gw.url,
        client,
        table: t,
        count,
        warmup: 100,
        gatewayPid: gw.proc.pid!,
        metrics: () => gw.metrics(),
        minimalUrl: mg.url,
      });
      const f = (x: number) => x.toFixed(2);
      console.log(
        `${flags.join(' ') || 'default'}: raw ${f(r.raw.p50)}/${f(r.raw.p99)} gw ${f(r.gateway.p50)}/${f(r.gateway.p99)} min ${f(r.minimal!.p50)}/${f(r.minimal!.p99)}` +
          ` added ${f(r.gateway.p50 - r.raw.p50)}/${f(r.gateway.p99 - r.raw.p99)} (min ${f(r.minimal!.p50 - r.raw.p50)}/${f(r.minimal!.p99 - r.raw.p99)})` +
          ` cpu ${f(r.gatewayCpuMsPerAdmission)} wait ${f(r.gatewayRunQueueMsPerAdmission)} inside ${f(r.gatewayInsideMeanMs)} (cores ${cpus().length})`,
      );
      await mg.stop();
      await gw.stop();
    }
} finally {
  await stopAll();
}
