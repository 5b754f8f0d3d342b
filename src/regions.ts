import { createHash } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Config } from './config.js';
import { createClient } from './dynamo.js';
import { InstanceLease } from './instance.js';
import { LeaseStore } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

/**
 * Home regions: every user item lives in exactly one region's table, so the
 * per-user cap stays one single-item conditional write, exact, wherever the
 * device connects. A gateway keeps one instance lease per region (its own
 * instance item there, its own id, heartbeat and mailbox), because a lease is
 * judged in its user's home region: a lease's `instanceId` is the id of the
 * admitting gateway's instance in that region. Losing one region's heartbeat
 * therefore fences only that region's instance, and with it only the sockets
 * of users homed there.
 *
 * With one region (DYNAMODB_REGIONS unset) this is one store and one instance
 * lease, exactly as before regions existed.
 */
export interface Region {
  readonly name: string;
  readonly store: LeaseStore;
  readonly instance: InstanceLease;
}

/**
 * The home region of a user without a `home_region` claim: rendezvous
 * (highest random weight) hashing of the user id over the region names. It
 * depends on the set of names, not their order (each gateway lists its own
 * region first), and adding a region moves only the users the new one wins.
 */
export function hashedHome(userId: string, names: readonly string[]): string {
  let best = names[0];
  let bestScore = -1;
  for (const name of names) {
    const score = createHash('sha256').update(`${name}\n${userId}`).digest().readUInt32BE(0);
    if (score > bestScore || (score === bestScore && name < best)) {
      best = name;
      bestScore = score;
    }
  }
  return best;
}

/** The router above the per-region lease stores: which store holds a user's leases. */
export class Regions implements Iterable<Region> {
  readonly #list: readonly Region[];
  readonly #byName: ReadonlyMap<string, Region>;
  readonly #names: readonly string[];
  readonly #clients: readonly DynamoDBClient[];

  constructor(list: readonly Region[], clients: readonly DynamoDBClient[] = []) {
    if (list.length === 0) throw new Error('at least one region');
    this.#list = list;
    this.#byName = new Map(list.map((r) => [r.name, r]));
    this.#names = list.map((r) => r.name);
    this.#clients = clients;
  }

  /** This gateway's own region (the first of DYNAMODB_REGIONS): readiness follows it. */
  get own(): Region {
    return this.#list[0];
  }

  get size(): number {
    return this.#list.length;
  }

  get(name: string): Region | undefined {
    return this.#byName.get(name);
  }

  [Symbol.iterator](): Iterator<Region> {
    return this.#list[Symbol.iterator]();
  }

  /**
   * The home region of `userId`: the one its token names in `home_region`,
   * else the hashed one. Undefined when the token names a region this
   * gateway does not know (the caller refuses the token). With one region
   * the claim is ignored: everything lives there, as before regions existed.
   */
  forUser(userId: string, claim?: string): Region | undefined {
    if (this.#list.length === 1) return this.#list[0];
    if (claim !== undefined) return this.#byName.get(claim);
    return this.#byName.get(hashedHome(userId, this.#names));
  }

  /**
   * Every region, the hashed home of `userId` first: where to look for a
   * lease when the user's claim is not at hand (a playback token's live check).
   */
  likeliestFor(userId: string): Region[] {
    const home = this.forUser(userId)!;
    return [home, ...this.#list.filter((r) => r !== home)];
  }

  /** The sentence a refused `home_region` claim gets (close reason, HTTP message). */
  unknownClaim(claim: string): string {
    return `token names home_region "${claim.slice(0, 32)}", not one of ${this.#names.join(', ')}`;
  }

  /** Closes every region's client (the end of shutdown). */
  destroy(): void {
    for (const client of this.#clients) client.destroy();
  }
}

/**
 * Builds one client, one lease store and one instance lease per configured
 * region; nothing starts (the instance leases start in app.ts). `endpoint`
 * overrides the single region's endpoint (the embedded store).
 */
export function openRegions(
  config: Config,
  metrics: Metrics,
  log: Logger,
  endpoint?: string,
): { regions: Regions; clients: Map<string, DynamoDBClient> } {
  const clients = new Map<string, DynamoDBClient>();
  const list: Region[] = [];
  for (const rc of config.regions) {
    const client = createClient({
      endpoint: endpoint ?? rc.endpoint,
      region: rc.awsRegion,
      requestTimeoutMs: config.dynamodbRequestTimeoutMs,
      maxAttempts: config.dynamodbMaxAttempts,
      direct: config.dynamodbDirectWrites,
    });
    clients.set(rc.name, client);
    // The store judges entries of its own instance without a read; the instance id changes when it fences.
    // (Called only once the instance lease below exists.)
    const store: LeaseStore = new LeaseStore(client, metrics, {
      table: config.table,
      selfInstanceId: () => instance.id,
      region: config.multiRegion ? rc.name : undefined,
    });
    const instance: InstanceLease = new InstanceLease(store, config, log, metrics, { name: rc.name, labelled: config.multiRegion });
    list.push({ name: rc.name, store, instance });
  }
  return { regions: new Regions(list, [...clients.values()]), clients };
}
