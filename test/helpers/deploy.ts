/**
 * What the deploy tests share: the rendered kustomize base, the manifests on
 * disk, and the set of environment variables the app reads. Everything is read
 * from the files operators use (k8s/, Dockerfile, src/config.ts), never copied.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateTableCommand, UpdateTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import { parseAllDocuments, parse } from 'yaml';
import { localClient } from './dynamodb-local.js';
import { newTable, ROOT } from './gateway.js';

export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any;
  data?: Record<string, string>;
};

/** Runs `kubectl kustomize k8s/` and parses every document; fails with the tool's own message. */
export function renderKustomize(): Manifest[] {
  let out: string;
  try {
    out = execFileSync('kubectl', ['kustomize', join(ROOT, 'k8s')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error('kubectl is not installed: the deploy tests render k8s/ with `kubectl kustomize`', { cause: err });
    throw new Error(`kubectl kustomize k8s/ failed:\n${e.stderr ?? e.message}`, { cause: err });
  }
  return yamlDocs(out);
}

export function yamlDocs(text: string): Manifest[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`bad YAML: ${doc.errors[0].message}`);
      return doc.toJS() as Manifest;
    })
    .filter((m) => m !== null);
}

export function readRepoFile(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8');
}

export function readYaml(path: string): any {
  return parse(readRepoFile(path));
}

/** The one manifest of a kind (and name, when given); throws when it is missing or ambiguous. */
export function only(manifests: Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0];
}

/** Environment variable names src/config.ts reads (`read(env, 'X')`, `int(env, 'X', ...)`, ...). */
export function configEnvVars(): Set<string> {
  const source = readRepoFile('src/config.ts');
  const names = [...source.matchAll(/\(env, '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]);
  if (names.length < 10) throw new Error(`found only ${names.length} variables in src/config.ts: has its reader changed?`);
  return new Set(names);
}

/** `KEY=value` lines of an env file (the ConfigMap's source). */
export function envFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readRepoFile(path).split('\n')) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Does a label selector's matchLabels select these labels? */
export function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  const entries = Object.entries(selector ?? {});
  return entries.length > 0 && entries.every(([k, v]) => labels?.[k] === v);
}

/** Every PromQL expression of the PrometheusRule, by alert name. */
export function alertRules(
  rule: Manifest,
): Array<{ alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }> {
  return (rule.spec.groups as Array<{ rules: any[] }>).flatMap((g) => g.rules);
}

/** Every PromQL expression in the Grafana dashboard: panel targets and query variables. */
export function dashboardQueries(dashboard: any): Array<{ panel: string; legend: string; expr: string }> {
  const panels: any[] = (dashboard.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])]);
  return panels.flatMap((p) =>
    (p.targets ?? []).map((t: any) => ({ panel: p.title as string, legend: String(t.legendFormat ?? t.refId), expr: t.expr as string })),
  );
}

/**
 * Ends this test file's process with a message if it runs past `ms`. A
 * DynamoDB request that never answers (the SDK's requestTimeout only warns,
 * see the deploy report) would otherwise hold CI until its own deadline.
 * `cleanup` kills what the file started, so nothing outlives it.
 */
export function watchdog(ms: number, what: string, cleanup: () => void): void {
  setTimeout(() => {
    process.stderr.write(`${what}: still running after ${ms / 1000} s, giving up (a request that never answered?)\n`);
    cleanup();
    process.exit(1);
  }, ms).unref();
}

/**
 * Creates a fresh table in DynamoDB Local exactly as k8s/aws/dynamodb-table.yaml
 * defines it (key, billing, TTL) and returns its name. Gateways then start with
 * CREATE_TABLE=false, as they do on AWS.
 */
export async function createTableFromCloudFormation(endpoint: string): Promise<string> {
  const spec = readYaml('k8s/aws/dynamodb-table.yaml').Resources.LeaseTable.Properties;
  const table = newTable();
  const client = localClient(endpoint);
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: spec.AttributeDefinitions,
        KeySchema: spec.KeySchema,
        BillingMode: spec.BillingMode,
      }),
    );
    await client.send(new UpdateTimeToLiveCommand({ TableName: table, TimeToLiveSpecification: spec.TimeToLiveSpecification }));
  } finally {
    client.destroy();
  }
  return table;
}
