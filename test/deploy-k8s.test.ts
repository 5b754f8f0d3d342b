/**
 * The kustomize base as operators apply it: `kubectl kustomize k8s/` renders,
 * every manifest validates against the Kubernetes and prometheus-operator
 * schemas, and the manifests agree with each other and with the app (probe
 * paths on the ops port, env vars config.ts reads, ports, selectors, the
 * shutdown budget).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Ingress, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Service, ServiceAccount } from 'kubernetes-models/v1';
import { loadConfig } from '../src/config.js';
import {
  alertRules,
  configEnvVars,
  dashboardQueries,
  envFile,
  only,
  readRepoFile,
  readYaml,
  renderKustomize,
  selects,
  yamlDocs,
  type Manifest,
} from './helpers/deploy.js';
import { createOpsServer } from '../src/ops-server.js';
import { Metrics } from '../src/metrics.js';

const MODELS: Record<string, { validate(): void } & (new (data: any) => { validate(): void })> = {
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'networking.k8s.io/v1/Ingress': Ingress,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
} as any;

const REQUIRED_ALERTS = [
  'SigmaStreamAllGatewaysDown',
  'SigmaStreamGatewayDown',
  'SigmaStreamReadinessFlapping',
  'SigmaStreamHeartbeatAgeHigh',
  'SigmaStreamAdmissionErrors',
  'SigmaStreamDenialSpike',
  'SigmaStreamDynamoDBThrottling',
  'SigmaStreamFencing',
];

function validate(m: Manifest): void {
  const Model = MODELS[`${m.apiVersion}/${m.kind}`];
  assert.ok(Model, `${m.apiVersion} ${m.kind} ${m.metadata.name}: no schema model registered in this test`);
  assert.doesNotThrow(
    () => new Model(m).validate(),
    (err: Error) => `${m.kind} ${m.metadata.name}: ${err.message}`,
  );
}

/** Seconds of a duration like 10s / 1m. */
function seconds(d: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(d);
  assert.ok(m, `unsupported duration ${d}`);
  return Number(m[1]) / (m[2] === 'ms' ? 1000 : m[2] === 'm' ? 1 / 60 : 1);
}

describe('k8s/ kustomize base', () => {
  const manifests = renderKustomize();
  const deployment = only(manifests, 'Deployment');
  const pod = deployment.spec.template;
  const container = pod.spec.containers[0];
  const containerPort = (name: string | number): number => {
    if (typeof name === 'number') return name;
    const port = container.ports.find((p: { name: string }) => p.name === name);
    assert.ok(port, `container has no port named ${name}`);
    return port.containerPort;
  };
  const configMap = only(manifests, 'ConfigMap', container.envFrom[0].configMapRef.name);
  const rule = only(manifests, 'PrometheusRule');

  test('renders the whole base, and every manifest validates against its schema', () => {
    const kinds = manifests.map((m) => m.kind).sort();
    for (const kind of [
      'ConfigMap',
      'Deployment',
      'HorizontalPodAutoscaler',
      'NetworkPolicy',
      'PodDisruptionBudget',
      'PrometheusRule',
      'Service',
      'ServiceAccount',
      'ServiceMonitor',
    ]) {
      assert.ok(kinds.includes(kind), `rendered base has no ${kind}`);
    }
    assert.equal(manifests.filter((m) => m.kind === 'Service').length, 2, 'a public Service and a metrics Service');
    assert.ok(manifests.every((m) => m.metadata.labels?.['app.kubernetes.io/part-of'] === 'sigma-stream'));
    assert.ok(
      manifests.every((m) => !('namespace' in m.metadata)),
      'the base is namespace-agnostic',
    );
    for (const m of manifests) validate(m);
  });

  test('the schemas catch a broken manifest (this test can fail)', () => {
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'http';
    assert.throws(() => new Deployment(broken).validate(), /containerPort must be integer/);
    const badRule = structuredClone(rule);
    badRule.spec.groups[0].rules[0].for = 'one minute';
    assert.throws(() => new PrometheusRule(badRule as any).validate(), /for must match pattern/);
  });

  test('the examples outside the base validate too', () => {
    const files = readdirSync(new URL('../k8s/examples', import.meta.url)).filter((f) => f.endsWith('.yaml'));
    assert.ok(files.length >= 2);
    for (const file of files) for (const m of yamlDocs(readRepoFile(`k8s/examples/${file}`))) validate(m);
  });

  test('every env var the Deployment sets is one src/config.ts reads, and config.ts accepts the values', () => {
    const known = configEnvVars();
    const set = [...Object.keys(configMap.data ?? {}), ...(container.env ?? []).map((e: { name: string }) => e.name)];
    assert.ok(set.length > 10);
    for (const name of set) assert.ok(known.has(name), `${name} is set by the Deployment but never read by src/config.ts`);
    assert.deepEqual(configMap.data, envFile('k8s/gateway.env'));

    const jwt = container.env.find((e: { name: string }) => e.name === 'JWT_SECRET');
    assert.ok(jwt?.valueFrom?.secretKeyRef?.name && jwt.valueFrom.secretKeyRef.key, 'JWT_SECRET comes from a Secret');
    assert.ok(!('JWT_SECRET' in (configMap.data ?? {})), 'no secret in the ConfigMap');

    const config = loadConfig({ ...configMap.data, JWT_SECRET: 'x'.repeat(32) });
    assert.equal(config.production, true);
    assert.equal(config.store, 'dynamodb');
    assert.equal(config.createTable, false, 'on AWS the table comes from k8s/aws/, not the gateway');
    assert.equal(containerPort('http'), config.port);
    assert.equal(containerPort('ops'), config.opsPort);
  });

  describe('probes answer on the ops port the app serves', () => {
    // The ops server exactly as app.ts builds it, minus the store: probe paths are routing, not leases.
    // The full app answers these probes in deploy-dockerfile.test.ts.
    let ops: Server;
    const base = (s: Server): string => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    before(async () => {
      ops = createOpsServer(new Metrics(), { notReadyBecause: () => undefined });
      await new Promise<void>((r) => ops.listen(0, '127.0.0.1', r));
    });
    after(() => {
      ops.closeAllConnections();
      ops.close();
    });

    test('readiness /readyz and liveness /healthz answer 200 on the port the probes name, the ops port', async () => {
      for (const probe of ['readinessProbe', 'livenessProbe']) {
        const get = container[probe]?.httpGet;
        assert.ok(get, `${probe} is an httpGet probe`);
        assert.equal(containerPort(get.port), loadConfig({}).opsPort, `${probe} targets the ops port (OPS_PORT default)`);
        const res = await fetch(`${base(ops)}${get.path}`);
        assert.equal(res.status, 200, `${probe} ${get.path} on the ops server`);
      }
      assert.equal(container.readinessProbe.httpGet.path, '/readyz');
      assert.equal(container.livenessProbe.httpGet.path, '/healthz');
      assert.equal((await fetch(`${base(ops)}/nope`)).status, 404, 'the ops server does not answer any path');
    });
  });

  test('Services target the container ports and select the pods', () => {
    const services = manifests.filter((m) => m.kind === 'Service');
    for (const svc of services) {
      assert.ok(selects(svc.spec.selector, pod.metadata.labels), `Service ${svc.metadata.name} selects the gateway pods`);
      for (const port of svc.spec.ports) containerPort(port.targetPort);
    }
    const publicSvc = only(manifests, 'Service', 'sigma-stream');
    assert.deepEqual(
      publicSvc.spec.ports.map((p: { targetPort: string }) => containerPort(p.targetPort)),
      [3000],
    );
    const metricsSvc = only(manifests, 'Service', 'sigma-stream-metrics');
    assert.deepEqual(
      metricsSvc.spec.ports.map((p: { targetPort: string }) => containerPort(p.targetPort)),
      [3001],
    );
  });

  test('the ServiceMonitor selects the metrics Service, its ops port, and yields job="sigma-stream"', () => {
    const sm = only(manifests, 'ServiceMonitor');
    const matched = manifests.filter((m) => m.kind === 'Service' && selects(sm.spec.selector.matchLabels, m.metadata.labels));
    assert.deepEqual(
      matched.map((m) => m.metadata.name),
      ['sigma-stream-metrics'],
      'selects the metrics Service only',
    );
    const svc = matched[0];
    for (const ep of sm.spec.endpoints) {
      const port = svc.spec.ports.find((p: { name: string }) => p.name === ep.port);
      assert.ok(port, `ServiceMonitor endpoint port ${ep.port} exists on the Service`);
      assert.equal(containerPort(port.targetPort), 3001);
      assert.equal(ep.path ?? '/metrics', '/metrics');
      assert.ok(seconds(ep.scrapeTimeout) < seconds(ep.interval));
    }
    // The alerts and the dashboard filter on this job name.
    const job = svc.metadata.labels?.[sm.spec.jobLabel];
    assert.equal(job, 'sigma-stream');
    const jobs = new Set(
      [
        ...alertRules(rule).map((r) => r.expr),
        ...dashboardQueries(JSON.parse(readRepoFile('k8s/grafana/sigma-stream.json'))).map((q) => q.expr),
      ].flatMap((e) => [...e.matchAll(/job="([^"]*)"/g)].map((m) => m[1])),
    );
    assert.deepEqual([...jobs], [job]);
  });

  test('PDB, HPA and NetworkPolicy point at the Deployment and its ports', () => {
    const pdb = only(manifests, 'PodDisruptionBudget');
    assert.ok(selects(pdb.spec.selector.matchLabels, pod.metadata.labels));
    assert.ok(pdb.spec.maxUnavailable === 1 || pdb.spec.minAvailable !== undefined);
    const hpa = only(manifests, 'HorizontalPodAutoscaler');
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    assert.ok(hpa.spec.minReplicas >= deployment.spec.replicas);
    assert.equal(hpa.spec.metrics[0].resource.name, 'cpu');
    assert.match(readRepoFile('docs/deploying.md'), /sigma_ws_connections/, 'the custom-metric variant is documented');

    const np = only(manifests, 'NetworkPolicy');
    assert.ok(selects(np.spec.podSelector.matchLabels, pod.metadata.labels));
    const allowed = np.spec.ingress.map((r: any) => ({
      ports: r.ports.map((p: { port: string }) => containerPort(p.port)),
      from: r.from.map((f: any) => f.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name']),
    }));
    assert.deepEqual(allowed, [
      { ports: [3000], from: ['ingress-nginx'] },
      { ports: [3001], from: ['monitoring'] },
    ]);
  });

  test('the pod is hardened, spread across zones and runs as the image user with IRSA', () => {
    assert.equal(deployment.spec.replicas, 3);
    assert.equal(pod.spec.securityContext.runAsNonRoot, true);
    const sc = container.securityContext;
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.deepEqual(sc.capabilities.drop, ['ALL']);
    for (const kind of ['requests', 'limits']) {
      assert.ok(container.resources[kind].cpu && container.resources[kind].memory, `resources.${kind} set`);
    }
    const user = /^USER (\d+)(?::\d+)?$/m.exec(readRepoFile('Dockerfile'));
    assert.ok(user, 'Dockerfile has a numeric USER');
    assert.equal(pod.spec.securityContext.runAsUser, Number(user[1]));
    assert.notEqual(Number(user[1]), 0);

    const zone = pod.spec.topologySpreadConstraints.find((t: any) => t.topologyKey === 'topology.kubernetes.io/zone');
    assert.ok(zone && selects(zone.labelSelector.matchLabels, pod.metadata.labels), 'spread across zones');

    const sa = only(manifests, 'ServiceAccount');
    assert.equal(pod.spec.serviceAccountName, sa.metadata.name);
    assert.match(sa.metadata.annotations?.['eks.amazonaws.com/role-arn'] ?? '', /^arn:aws:iam::\d{12}:role\/.+/);
  });

  test('terminationGracePeriodSeconds covers preStop and the whole shutdown src/app.ts does', () => {
    const config = loadConfig({ ...configMap.data, JWT_SECRET: 'x'.repeat(32) });
    const preStop = container.lifecycle.preStop.exec.command;
    assert.equal(preStop[0], 'sleep');
    const preStopS = Number(preStop[1]);
    assert.ok(preStopS >= 3, 'long enough for endpoints to drop the pod before SIGTERM');
    // app.ts shutdown: drain (the last 1012 at most DRAIN_MS + max(DRAIN_MS, request timeout) in, hub.ts) ->
    // settle(admission + 1 s) -> instance item delete (all attempts).
    const drainS = config.drainMs + Math.max(config.drainMs, config.dynamodbRequestTimeoutMs);
    const shutdownS = (drainS + config.admissionTimeoutMs + 1000 + config.dynamodbRequestTimeoutMs * config.dynamodbMaxAttempts) / 1000;
    const grace = pod.spec.terminationGracePeriodSeconds;
    assert.ok(grace >= preStopS + shutdownS + 5, `grace ${grace} s < preStop ${preStopS} s + shutdown ${shutdownS} s + 5 s headroom`);
  });

  test('every required alert is there with a severity, a runbook and a docs section', () => {
    const rules = alertRules(rule);
    const names = rules.map((r) => r.alert);
    for (const name of REQUIRED_ALERTS) assert.ok(names.includes(name), `alert ${name} missing`);
    const docs = readRepoFile('docs/deploying.md');
    for (const r of rules) {
      assert.match(r.labels?.severity ?? '', /^(critical|warning)$/, `${r.alert} severity`);
      assert.ok((r.annotations?.runbook ?? '').length > 20, `${r.alert} has a runbook line`);
      assert.ok(r.annotations?.summary, `${r.alert} has a summary`);
      assert.ok(docs.includes(`### ${r.alert}`), `docs/deploying.md has a "### ${r.alert}" section`);
      assert.ok(r.annotations.runbook.includes(`#${r.alert.toLowerCase()}`), `${r.alert} runbook links its docs section`);
    }
  });

  test('the dashboard ConfigMap carries the grafana_dashboard label and the dashboard JSON', () => {
    const cm = manifests.find((m) => m.kind === 'ConfigMap' && m.metadata.labels?.grafana_dashboard === '1');
    assert.ok(cm, 'a ConfigMap labelled grafana_dashboard: "1"');
    const json = cm.data?.['sigma-stream.json'];
    assert.ok(json);
    assert.deepEqual(JSON.parse(json), JSON.parse(readRepoFile('k8s/grafana/sigma-stream.json')));
    const queries = dashboardQueries(JSON.parse(json))
      .map((q) => q.expr)
      .join('\n');
    for (const metric of [
      'sigma_streams_active',
      'sigma_lease_acquire_total',
      'sigma_lease_acquire_duration_seconds_bucket',
      'sigma_lease_release_total',
      'sigma_dynamodb_requests_total',
      'sigma_instance_heartbeat_age_seconds',
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag',
    ]) {
      assert.ok(queries.includes(metric), `dashboard charts ${metric}`);
    }
  });

  test('the ingress example keeps WebSockets open past the ping interval and targets the public Service', () => {
    const [ing] = yamlDocs(readRepoFile('k8s/examples/ingress-nginx.yaml'));
    const pingS = loadConfig({ ...configMap.data, JWT_SECRET: 'x'.repeat(32) }).pingIntervalMs / 1000;
    for (const key of ['proxy-read-timeout', 'proxy-send-timeout']) {
      const value = Number(ing.metadata.annotations?.[`nginx.ingress.kubernetes.io/${key}`]);
      assert.ok(value > 2 * pingS, `${key} ${value} s is well above the ${pingS} s ping interval`);
    }
    const backend = ing.spec.rules[0].http.paths[0].backend.service;
    const svc = only(manifests, 'Service', backend.name);
    assert.ok(svc.spec.ports.some((p: { name: string }) => p.name === backend.port.name));
  });

  test('the DynamoDB table definition has the key, billing and TTL the gateway expects', () => {
    const cfn = readYaml('k8s/aws/dynamodb-table.yaml');
    const table = cfn.Resources.LeaseTable.Properties;
    assert.deepEqual(table.KeySchema, [{ AttributeName: 'pk', KeyType: 'HASH' }]);
    assert.deepEqual(table.AttributeDefinitions, [{ AttributeName: 'pk', AttributeType: 'S' }]);
    assert.equal(table.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(table.TimeToLiveSpecification, { AttributeName: 'ttl', Enabled: true });
    assert.equal(cfn.Parameters.TableName.Default, configMap.data?.DYNAMODB_TABLE);
    // The app's own table creation (DynamoDB Local) must describe the same table.
    const dynamo = readRepoFile('src/dynamo.ts');
    assert.match(dynamo, /KeySchema: \[\{ AttributeName: 'pk', KeyType: 'HASH' \}\]/);
    assert.match(dynamo, /AttributeName: 'ttl', Enabled: true/);
    const script = readRepoFile('k8s/aws/create-table.sh');
    assert.match(script, /AttributeName=pk,KeyType=HASH/);
    assert.match(script, /--billing-mode PAY_PER_REQUEST/);
    assert.match(script, /AttributeName=ttl/);
  });
});
