/**
 * Reads a V8 `.cpuprofile` (written by `node --cpu-prof`) and says where the
 * CPU went inside a time window: self time of the top functions, and a split
 * by owner (the AWS SDK, jose, ws, our code, logging, metrics, GC, the rest
 * of Node). Samples in Node's own code (`node:` modules, builtins such as
 * JSON.stringify) are booked to the nearest caller that is not Node's, so
 * the crypto call jose makes counts as jose and the JSON.stringify of a log
 * line counts as logging; what has no such caller (socket reads, timers
 * firing) stays "node core".
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export type Owner = 'sdk' | 'jose' | 'ws' | 'ours' | 'logging' | 'metrics' | 'other deps' | 'node core' | 'gc' | 'program';
export const OWNERS: readonly Owner[] = ['sdk', 'jose', 'ws', 'ours', 'logging', 'metrics', 'other deps', 'node core', 'gc', 'program'];

export interface ProfileSummary {
  /** Busy (non-idle) CPU time in the window, ms. */
  busyMs: number;
  windowMs: number;
  byOwner: Record<Owner, number>;
  /** Top functions by self time: name (file:line), ms, % of busy. */
  top: Array<{ fn: string; owner: Owner; ms: number; pct: number }>;
}

function ownerOfUrl(url: string, fn: string): Owner | undefined {
  if (fn === '(garbage collector)') return 'gc';
  if (fn === '(program)') return 'program';
  if (
    url.includes('/node_modules/@aws-sdk/') ||
    url.includes('/node_modules/@smithy/') ||
    url.includes('/node_modules/@aws-crypto/') ||
    url.includes('/node_modules/fast-xml-parser/') ||
    url.includes('/node_modules/tslib/') ||
    url.includes('/node_modules/@aws/')
  )
    return 'sdk';
  if (url.includes('/node_modules/jose/')) return 'jose';
  if (url.includes('/node_modules/ws/')) return 'ws';
  if (url.includes('/node_modules/prom-client/') || /\/(dist|src)\/metrics\.[jt]s$/.test(url)) return 'metrics';
  if (/\/(dist|src)\/log\.[jt]s$/.test(url)) return 'logging';
  if (url.includes('/node_modules/')) return 'other deps';
  if (url.includes('/dist/') || url.includes('/src/')) return 'ours';
  return undefined; // node: modules, builtins, native
}

const short = (url: string): string =>
  url
    .replace(/^file:\/\//, '')
    .replace(/^.*\/node_modules\//, '')
    .replace(/^.*\/(dist|src)\//, '$1/');

/** A `.cpuprofile` read once, for many windows of {@link summarizeProfile}. */
export function loadProfile(path: string): Profile {
  return JSON.parse(readFileSync(path, 'utf8')) as Profile;
}

/**
 * Summarizes `path` (or a profile {@link loadProfile} read) over [fromUs, toUs] (the profiled process's monotonic
 * clock in microseconds, the same clock as `process.hrtime.bigint() / 1000n`
 * in any process of the machine); the whole profile when omitted.
 */
export function summarizeProfile(path: string | Profile, fromUs = -Infinity, toUs = Infinity, topN = 15): ProfileSummary {
  const p = typeof path === 'string' ? loadProfile(path) : path;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ownerCache = new Map<number, Owner>();
  const ownerOf = (id: number): Owner => {
    const cached = ownerCache.get(id);
    if (cached) return cached;
    // node:_http_outgoing flushes a request on a later tick, with no caller of ours left on the stack. In a
    // gateway under admissions the only outgoing HTTP is the SDK's (DynamoDB): such samples are the SDK's.
    let httpOut = false;
    let owner: Owner | undefined;
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at)!.callFrame;
      if (f.url === 'node:_http_outgoing' || f.url === 'node:_http_client') httpOut = true;
      const o = ownerOfUrl(f.url, f.functionName);
      if (o !== undefined) {
        owner = o;
        break;
      }
    }
    owner ??= httpOut ? 'sdk' : 'node core';
    ownerCache.set(id, owner);
    return owner;
  };
  const self = new Map<number, number>();
  const byOwner = Object.fromEntries(OWNERS.map((o) => [o, 0])) as Record<Owner, number>;
  let t = p.startTime;
  let busyUs = 0;
  let first = Infinity;
  let last = -Infinity;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    if (t < fromUs || t > toUs) continue;
    first = Math.min(first, t);
    last = Math.max(last, t);
    // The delta before a sample is the time that sample stands for (V8's own convention in DevTools).
    const dt = p.timeDeltas[i];
    const node = byId.get(p.samples[i])!;
    if (node.callFrame.functionName === '(idle)') continue;
    busyUs += dt;
    self.set(node.id, (self.get(node.id) ?? 0) + dt);
    byOwner[ownerOf(node.id)] += dt / 1000;
  }
  // Self time by function and owner (a native such as writeBuffer serves ws frames and log lines alike).
  const byFn = new Map<string, { fn: string; owner: Owner; us: number }>();
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const fn = `${f.functionName || '(anonymous)'} ${f.url ? `${short(f.url)}:${f.lineNumber + 1}` : '(native)'}`;
    const owner = ownerOf(id);
    const e = byFn.get(`${fn}|${owner}`) ?? { fn, owner, us: 0 };
    e.us += us;
    byFn.set(`${fn}|${owner}`, e);
  }
  const top = [...byFn.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({ fn: e.fn, owner: e.owner, ms: e.us / 1000, pct: (100 * e.us) / busyUs }));
  return { busyMs: busyUs / 1000, windowMs: (last - first) / 1000, byOwner, top };
}

/**
 * Markdown lines for one summary. With `per`, CPU-ms per operation by owner: the profile's shares times the
 * CPU the process really used in the window (`cpuMs`, from /proc). Sample weights are wall time between
 * samples, so on a loaded machine the profile's own busy total also counts time spent waiting for a core.
 */
export function profileMarkdown(title: string, s: ProfileSummary, per?: { ops: number; what: string; cpuMs: number }): string {
  const lines = [
    `### ${title}`,
    '',
    `Busy samples ${s.busyMs.toFixed(0)} ms in a ${(s.windowMs / 1000).toFixed(1)} s window` +
      (per ? `; the process used ${per.cpuMs.toFixed(0)} CPU-ms in it (/proc).` : '.'),
    '',
  ];
  lines.push('| owner | CPU ms | % of busy |' + (per ? ` CPU-ms per ${per.what} |` : ''), '|---|---|---|' + (per ? '---|' : ''));
  for (const o of OWNERS) {
    const ms = s.byOwner[o];
    lines.push(
      `| ${o} | ${ms.toFixed(0)} | ${((100 * ms) / s.busyMs).toFixed(1)} |` +
        (per ? ` ${(((ms / s.busyMs) * per.cpuMs) / per.ops).toFixed(3)} |` : ''),
    );
  }
  if (per) lines.push(`| **total** | ${s.busyMs.toFixed(0)} | 100 | ${(per.cpuMs / per.ops).toFixed(3)} |`);
  lines.push('', '| self time, top functions | owner | ms | % |', '|---|---|---|---|');
  for (const t of s.top) lines.push(`| \`${t.fn}\` | ${t.owner} | ${t.ms.toFixed(0)} | ${t.pct.toFixed(1)} |`);
  return lines.join('\n');
}
