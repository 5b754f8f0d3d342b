/**
 * Two DynamoDB Locals as two regions, "eu" and "us": the run's own (test/run.ts
 * or dynamodb-local.ts) is eu, a second one on another ephemeral port is us.
 * Each gateway reaches each region through its own fault proxy, so one
 * gateway can lose one region while everyone else keeps it.
 */
import { spawnGateway, startGateway, newTable, type ChildGateway, type TestGateway } from './gateway.js';
import { dynamoEndpoint, startDynamoLocal, type DynamoLocal } from './dynamodb-local.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';

export type RegionName = 'eu' | 'us';
export const REGION_NAMES: readonly RegionName[] = ['eu', 'us'];

let second: Promise<DynamoLocal> | undefined;

/** The endpoint of each region's DynamoDB Local (the second one starts on first use, once per process). */
export async function regionEndpoints(): Promise<Record<RegionName, string>> {
  second ??= startDynamoLocal().then((local) => {
    process.once('exit', () => void local.stop());
    return local;
  });
  return { eu: await dynamoEndpoint(), us: (await second).endpoint };
}

/** Stops the second DynamoDB Local (a test file's `after()`): its child process would keep the file running. */
export async function stopRegions(): Promise<void> {
  const local = await second;
  second = undefined;
  await local?.stop();
}

/** DYNAMODB_REGIONS for a gateway whose own region is `own`, every region through `endpoints`. */
export function regionsEnv(own: RegionName, endpoints: Record<RegionName, string>): Record<string, string> {
  const order = [own, ...REGION_NAMES.filter((r) => r !== own)];
  // DYNAMODB_ENDPOINT is set by gatewayEnv(); empty reads as unset, and the two may not be combined.
  return { DYNAMODB_REGIONS: order.map((r) => `${r}=${endpoints[r]}`).join(','), DYNAMODB_ENDPOINT: '' };
}

export interface RegionalGateway extends TestGateway {
  readonly own: RegionName;
  /** This gateway's way to each region's store. */
  readonly proxies: Record<RegionName, FaultProxy>;
}

async function proxiesFor(endpoints: Record<RegionName, string>): Promise<Record<RegionName, FaultProxy>> {
  return { eu: await startFaultProxy(endpoints.eu), us: await startFaultProxy(endpoints.us) };
}

function through(proxies: Record<RegionName, FaultProxy>): Record<RegionName, string> {
  return { eu: proxies.eu.endpoint, us: proxies.us.endpoint };
}

/** An in-process gateway in region `own`, one fault proxy per region; `stop()` shuts both down. */
export async function startRegionalGateway(own: RegionName, table: string, env: Record<string, string> = {}): Promise<RegionalGateway> {
  const proxies = await proxiesFor(await regionEndpoints());
  const gw = await startGateway({ table, env: { ...regionsEnv(own, through(proxies)), ...env } });
  return {
    ...gw,
    own,
    proxies,
    stop: async () => {
      for (const p of Object.values(proxies)) p.set('pass');
      await gw.stop();
      for (const p of Object.values(proxies)) await p.close();
    },
  };
}

/** The same as a child process, for SIGKILL. */
export async function spawnRegionalGateway(
  own: RegionName,
  table: string,
  env: Record<string, string> = {},
): Promise<ChildGateway & { readonly proxies: Record<RegionName, FaultProxy> }> {
  const proxies = await proxiesFor(await regionEndpoints());
  const child = await spawnGateway({ table, env: { ...regionsEnv(own, through(proxies)), ...env } });
  return Object.assign(child, { proxies });
}

/** A table name for one test: every region gets a table of that name (CREATE_TABLE). */
export { newTable };
