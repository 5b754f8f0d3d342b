/**
 * `node --import tsx test/bench/pinned-probe.ts [count] [--pm-qos] [flags...]`: the pinned-latency phase of
 * `npm run bench` (1b) alone, twice per variant of the gateway's node flags (variants separated by `,`; `default`
 * is none), to find what the tail is made of. With `--pm-qos` (root), each variant runs once more with a PM QoS
 * request of 0 µs held on /dev/cpu_dma_latency, as cyclictest and tuned's latency-performance profile hold it:
 * idle cores poll instead of halting, so a message from the other core does not wait for a halted vCPU to wake.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { rawClient } from './admission.js';
import { dynamoLocal, stopAll } from './procs.js';
import { measurePinnedLatency } from './pinned.js';
import { PATIENT, PRODUCTION_TIMINGS } from './storm.js';

const count = Number(process.argv[2] ?? 600);
const args = process.argv.slice(3);
const qos = args.includes('--pm-qos') ? [false, true] : [false];
const variants = (args.filter((a) => a !== '--pm-qos').join(' ') || 'default').split(',').map((v) =>
  v
    .trim()
    .split(/\s+/)
    .filter((f) => f !== 'default'),
);
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const local = await dynamoLocal();
const client = rawClient(local.endpoint);
const f = (x: number): string => x.toFixed(2);
try {
  for (let round = 0; round < 2; round++)
    for (const flags of variants)
      for (const held of qos) {
        // The request holds while the file stays open, and ends when it is closed.
        const request = held ? openSync('/dev/cpu_dma_latency', 'w') : undefined;
        if (request !== undefined) writeSync(request, Buffer.from(new Int32Array([0]).buffer));
        const r = await measurePinnedLatency({
          endpoint: local.endpoint,
          client,
          table: `probe-${Date.now()}`,
          count,
          warmup: 100,
          env: { ...PRODUCTION_TIMINGS, ...PATIENT },
          execArgv: flags,
        });
        if (request !== undefined) closeSync(request);
        if (r === undefined) throw new Error('pinned-probe needs 2 cores and its own DynamoDB Local');
        const min = r.minimal!;
        const [c, e] = [r.grantAtOnce!, r.rawElsewhere!];
        console.log(
          `${flags.join(' ') || 'default'}${held ? ' (PM QoS 0)' : ''}: raw ${f(r.raw.p50)}/${f(r.raw.p99)} gw ${f(r.gateway.p50)}/${f(r.gateway.p99)} min ${f(min.p50)}/${f(min.p99)}` +
            ` added ${f(r.gateway.p50 - r.raw.p50)}/${f(r.gateway.p99 - r.raw.p99)} (min ${f(min.p50 - r.raw.p50)}/${f(min.p99 - r.raw.p99)})` +
            ` floor ${f(c.p50 + e.p50 - r.raw.p50)}/${f(c.p99 + e.p99 - r.raw.p99)} (upgrade ${f(c.p50)}/${f(c.p99)}, raw from core 0 ${f(e.p50)}/${f(e.p99)})` +
            ` cpu ${f(r.gatewayCpuMsPerAdmission)} wait ${f(r.gatewayRunQueueMsPerAdmission)} inside ${f(r.gatewayInsideMeanMs)}`,
        );
      }
} finally {
  client.destroy();
  await stopAll();
}
process.exit(0);
