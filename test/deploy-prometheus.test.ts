/**
 * The monitoring path with the real tools: a real Prometheus (Debian's
 * package) scrapes a running gateway's ops port every second and evaluates the
 * PrometheusRule's alerts; promtool lints the exposition and the rules; every
 * query of the Grafana dashboard and every alert expression runs against that
 * Prometheus. Nothing leaves 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { connect, eventually, type Device } from './helpers/devices.js';
import {
  alertRules,
  createTableFromCloudFormation,
  dashboardQueries,
  envFile,
  only,
  readRepoFile,
  renderKustomize,
  watchdog,
} from './helpers/deploy.js';
import { dynamoEndpoint, freePort } from './helpers/dynamodb-local.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

/**
 * Dashboard queries allowed to return nothing in this test: series that exist
 * only once the event happened (a revocation) or come from another exporter.
 */
const MAY_BE_EMPTY = new Set([
  'Fencing events and revocations / revoked {{code}} via {{path}}',
  'Turned away before admission / rejected {{reason}}',
  'Turned away before admission / auth {{reason}}',
]);

/** Series from other exporters that alerts use; everything else an alert selects must exist here. */
const EXTERNAL_SERIES = new Set(['kube_pod_status_ready']);

const JOB = 'sigma-stream';

function tool(name: string): string {
  const found = spawnSync(name, ['--version'], { encoding: 'utf8' });
  if (found.error) {
    throw new Error(
      `${name} is not installed: the monitoring checks need Debian's prometheus package ` +
        `(apt-get install prometheus, which .ci/run does) for /usr/bin/prometheus and /usr/bin/promtool`,
    );
  }
  return name;
}

/** Replaces Grafana's variables with what a dashboard user would get: all instances, a 1m rate window. */
function grafanaToPromQL(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replace(/\$\{?(namespace|instance)\}?/g, '.*');
}

describe('Prometheus scrapes a gateway; dashboard and alerts evaluate', () => {
  let prometheus: string;
  let promtool: string;
  let gw: TestGateway;
  let proc: ChildProcess | undefined;
  let dir: string;
  let api: string;
  let promLog = '';
  const rule = only(renderKustomize(), 'PrometheusRule');
  const dashboard = JSON.parse(readRepoFile('k8s/grafana/sigma-stream.json'));
  watchdog(150_000, 'deploy-prometheus.test.ts', () => proc?.kill('SIGKILL'));

  async function query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
    const res = await fetch(`${api}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    const body = (await res.json()) as { status: string; error?: string; data: { resultType: string; result: any } };
    if (body.status !== 'success') throw new Error(`Prometheus refused ${expr}: ${body.error}`);
    return body.data.resultType === 'vector' ? body.data.result : [{ metric: {}, value: body.data.result }];
  }

  async function scalar(expr: string): Promise<number | undefined> {
    const result = await query(expr);
    return result.length === 0 ? undefined : Number(result[0].value[1]);
  }

  before(async () => {
    prometheus = tool('prometheus');
    promtool = tool('promtool');
    // The table as operators create it (CREATE_TABLE=false), and the default lease timings the
    // alert thresholds assume. They also keep start-up safe on a loaded machine: the instance
    // registers only once a write answers within INSTANCE_HEARTBEAT_MS (see the deploy report).
    const endpoint = await dynamoEndpoint();
    const table = await createTableFromCloudFormation(endpoint);
    const defaults = [
      'INSTANCE_HEARTBEAT_MS',
      'INSTANCE_TTL_MS',
      'FENCING_MARGIN_MS',
      'ADMISSION_TIMEOUT_MS',
      'DYNAMODB_REQUEST_TIMEOUT_MS',
    ];
    const production = envFile('k8s/gateway.env');
    gw = await startGateway({
      endpoint,
      table,
      env: { CREATE_TABLE: 'false', ...Object.fromEntries(defaults.map((k) => [k, production[k]])) },
    });
    dir = mkdtempSync(join(tmpdir(), 'sigma-prom-'));
    writeFileSync(join(dir, 'rules.yml'), stringify({ groups: rule.spec.groups }));
    const opsPort = new URL(gw.opsUrl).port;
    writeFileSync(
      join(dir, 'prometheus.yml'),
      stringify({
        global: { scrape_interval: '1s', scrape_timeout: '900ms', evaluation_interval: '1s' },
        rule_files: [join(dir, 'rules.yml')],
        // The job name the ServiceMonitor's jobLabel gives in the cluster (checked in deploy-k8s.test.ts).
        scrape_configs: [{ job_name: JOB, static_configs: [{ targets: [`127.0.0.1:${opsPort}`] }] }],
      }),
    );
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    proc = spawn(
      prometheus,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr!.on('data', (d: Buffer) => (promLog += d.toString()));
    await eventually(
      async () => {
        if (proc!.exitCode !== null) throw new Error(`prometheus exited ${proc!.exitCode}:\n${promLog}`);
        return (await fetch(`${api}/-/ready`)).ok;
      },
      20_000,
      100,
    ).catch((err: Error) => {
      throw new Error(`Prometheus did not get ready: ${err.message}\n${promLog}`);
    });
    await eventually(async () => (await scalar(`up{job="${JOB}"}`)) === 1, 10_000, 200);
  });

  after(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    await gw?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("promtool check metrics finds no problem at all (prom-client's misnamed *_total gauges are dropped)", async () => {
    const text = await gw.metrics();
    assert.match(text, /^sigma_streams_active /m);
    assert.match(text, /^nodejs_active_handles\{/m, 'the per-type defaults stay');
    const run = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const findings = `${run.stdout}\n${run.stderr}`
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    assert.deepEqual(findings, []);
    assert.equal(run.status, 0);
  });

  test("promtool check rules passes on the PrometheusRule's rules", () => {
    const run = spawnSync(promtool, ['check', 'rules', join(dir, 'rules.yml')], { encoding: 'utf8' });
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, new RegExp(`SUCCESS: ${alertRules(rule).length} rules found`));
  });

  test('Prometheus loads and evaluates every alert rule without error', async () => {
    const rules = await eventually(
      async () => {
        const body = (await (await fetch(`${api}/api/v1/rules`)).json()) as {
          data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> };
        };
        const all = body.data.groups.flatMap((g) => g.rules);
        return all.length > 0 && all.every((r) => r.health !== 'unknown') ? all : undefined;
      },
      10_000,
      200,
    );
    assert.ok(rules);
    assert.deepEqual(
      rules.map((r) => r.name).sort(),
      alertRules(rule)
        .map((r) => r.alert)
        .sort(),
    );
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
  });

  test('sum(sigma_streams_active) in Prometheus follows devices opening and closing', async () => {
    const token = await mintToken('prom-user', { maxStreams: 3 });
    const devices: Device[] = ['tv', 'phone', 'laptop'].map((device) => connect(gw.url, { token, device }));
    // No per-test cleanup: the dashboard test below relies on the laptop still playing; the suite's
    // after() drains the gateway, which closes it.
    await Promise.all(devices.map((d) => d.decision));
    await eventually(async () => (await scalar('sum(sigma_streams_active)')) === 3, 10_000, 250);

    // Over the limit twice: denials, so the denial panels and alerts have data. The second
    // one comes after Prometheus saw the series: rate() cannot count a series' first sample.
    const seen = (sample: string) => eventually(async () => (await query(sample)).length > 0, 10_000, 250);
    assert.equal((await connect(gw.url, { token, device: 'tablet' }).closed).code, 4429);
    await seen('sigma_lease_acquire_total{result="denied"}');
    assert.equal((await connect(gw.url, { token, device: 'tablet' }).closed).code, 4429);

    await devices[0].close(1000);
    await seen('sigma_lease_release_total{reason="client_close"}');
    await devices[1].close(1000);
    await eventually(async () => (await scalar('sum(sigma_streams_active)')) === 1, 10_000, 250);
    await eventually(async () => (await scalar('sum(sigma_lease_release_total{reason="client_close"})')) === 2, 10_000, 250);
  });

  test('every dashboard query evaluates, and the dashboard panels return data', async () => {
    // Runs after the devices test: one stream is still open and the rate windows hold the activity.
    const queries = dashboardQueries(dashboard);
    assert.ok(queries.length >= 15);
    const emptyPanels = async (): Promise<string[]> => {
      const empty: string[] = [];
      for (const q of queries) {
        const expr = grafanaToPromQL(q.expr);
        assert.ok(!expr.includes('$'), `unreplaced Grafana variable in ${expr}`);
        if ((await query(expr)).length === 0) empty.push(`${q.panel} / ${q.legend}`);
      }
      return empty.filter((e) => !MAY_BE_EMPTY.has(e));
    };
    // A rate needs two scrapes of a series: give the last events a few seconds, as a user would.
    let empty: string[] = [];
    await eventually(async () => (empty = await emptyPanels()).length === 0, 10_000, 500).catch(() => {});
    assert.deepEqual(empty, [], 'panels without data');

    assert.equal(await scalar(grafanaToPromQL(queries.find((q) => q.panel === 'Concurrent streams (fleet)')!.expr)), 1);
    const ratio = await scalar(grafanaToPromQL(queries.find((q) => q.panel === 'Denial ratio')!.expr));
    assert.ok(ratio !== undefined && ratio > 0 && ratio <= 1, `denial ratio ${ratio}`);
    for (const v of dashboard.templating.list.filter((v: { type: string }) => v.type === 'query')) {
      const [, metric] = /label_values\(([a-z_]+)/.exec(v.query.query)!;
      assert.ok((await query(metric)).length > 0, `variable ${v.name} draws from ${metric}, which exists`);
    }
  });

  test('every alert expression evaluates, and every series it selects exists', async () => {
    for (const r of alertRules(rule)) {
      await query(r.expr);
      for (const [, metric, matchers] of r.expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}/g)) {
        if (EXTERNAL_SERIES.has(metric)) continue;
        // Only the metric and its job: label values such as result="error" need not have happened yet.
        const selector = `${metric}{${/job="[^"]*"/.exec(matchers)?.[0] ?? ''}}`;
        assert.ok((await query(selector)).length > 0, `${r.alert}: ${selector} selects no series: misspelt metric or job?`);
      }
    }
  });

  test('a healthy gateway fires no alert; a stopped one sets the down alerts pending', async () => {
    const active = async (): Promise<Array<{ labels: { alertname: string }; state: string }>> =>
      ((await (await fetch(`${api}/api/v1/alerts`)).json()) as { data: { alerts: any[] } }).data.alerts;
    assert.deepEqual(await active(), []);

    await gw.stop();
    const names = await eventually(
      async () => {
        const alerts = await active();
        const set = new Set(alerts.map((a) => a.labels.alertname));
        return set.has('SigmaStreamGatewayDown') && set.has('SigmaStreamAllGatewaysDown') ? alerts : undefined;
      },
      15_000,
      250,
    );
    assert.ok(names);
    assert.ok(
      names.every((a) => a.state === 'pending'),
      'pending until their `for:` elapses',
    );
  });
});
