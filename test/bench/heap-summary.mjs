// Reads V8 .heapsnapshot files (test/bench/heap-probe.ts --snapshot) and prints
// self size and count by node kind and constructor, no dependencies:
//   node test/bench/heap-summary.mjs A.heapsnapshot [B.heapsnapshot] [--per 5000] [--top 40]
// With two files: B - A; with four: (D - C) - (B - A) (bare base, bare held, gateway base, gateway
// held: what the gateway adds per socket over bare ws); divided by --per (sockets held).
// --retainers NAME: for objects of constructor NAME in the last file, the most common
// retainer chains (edge names and holder constructors, --depth levels up, default 2), with their self size.
// --cut: retained size by owner (see the end of this file).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    per: { type: 'string' },
    top: { type: 'string' },
    retainers: { type: 'string' },
    depth: { type: 'string' },
    cut: { type: 'string' },
  },
});
const per = Number(values.per ?? 1);
const top = Number(values.top ?? 40);

function load(file) {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  const m = snap.snapshot.meta;
  const nf = m.node_fields.length;
  const ef = m.edge_fields.length;
  const types = m.node_types[0];
  const etypes = m.edge_types[0];
  const f = Object.fromEntries(m.node_fields.map((n, i) => [n, i]));
  const e = Object.fromEntries(m.edge_fields.map((n, i) => [n, i]));
  return { snap, nf, ef, types, etypes, f, e, strings: snap.strings, nodes: snap.nodes, edges: snap.edges };
}

/** Node kind + constructor; strings and code are pooled under their kind. */
function key(s, i) {
  const type = s.types[s.nodes[i + s.f.type]];
  const name = s.strings[s.nodes[i + s.f.name]];
  if (type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' || type === 'array')
    return `${type}:${name.length > 60 ? name.slice(0, 60) + '…' : name}`;
  return `(${type})`;
}

function aggregate(s) {
  const out = new Map();
  for (let i = 0; i < s.nodes.length; i += s.nf) {
    const k = key(s, i);
    const a = out.get(k) ?? { size: 0, count: 0 };
    a.size += s.nodes[i + s.f.self_size];
    a.count++;
    out.set(k, a);
  }
  return out;
}

const snaps = positionals.map(load);
const aggs = snaps.map(aggregate);
const total = (agg) => [...agg.values()].reduce((t, a) => t + a.size, 0);
// One file: itself; two: B - A; four: (D - C) - (B - A), e.g. bare base, bare held, gateway base, gateway held.
const signs = { 1: [1], 2: [-1, 1], 4: [1, -1, -1, 1] }[aggs.length];
if (!signs) throw new Error('give 1, 2 or 4 snapshots');
const keys = new Set(aggs.flatMap((g) => [...g.keys()]));
const rows = [...keys].map((k) => {
  let size = 0;
  let count = 0;
  aggs.forEach((g, i) => {
    size += signs[i] * (g.get(k)?.size ?? 0);
    count += signs[i] * (g.get(k)?.count ?? 0);
  });
  return { k, size: size / per, count: count / per };
});
rows.sort((r, s) => Math.abs(s.size) - Math.abs(r.size));
const sum = aggs.reduce((t, g, i) => t + signs[i] * total(g), 0);
console.log(
  `total self size: ${aggs.map((g) => (total(g) / 2 ** 20).toFixed(1) + ' MB').join(', ')}; combined per unit ${(sum / per).toFixed(0)} B`,
);
console.log('bytes/unit  count/unit  kind:constructor');
for (const r of rows.slice(0, top)) console.log(`${r.size.toFixed(1).padStart(10)}  ${r.count.toFixed(2).padStart(10)}  ${r.k}`);

/** Index of each node's first edge in `s.edges` (node i's edges end where node i + 1's begin). */
function firstEdges(s) {
  const n = s.nodes.length / s.nf;
  const first = new Uint32Array(n + 1);
  for (let i = 0, e = 0; i < n; i++) {
    first[i] = e;
    e += s.nodes[i * s.nf + s.f.edge_count] * s.ef;
  }
  first[n] = s.edges.length;
  return first;
}

if (values.retainers) {
  const s = snaps[snaps.length - 1];
  const n = s.nodes.length / s.nf;
  // First edge index of every node, and the reverse edges (retainer lists).
  const firstEdge = firstEdges(s);
  const retainers = Array.from({ length: n }, () => []);
  for (let i = 0; i < n; i++) {
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += s.ef) {
      const etype = s.etypes[s.edges[e + s.e.type]];
      if (etype === 'weak') continue;
      const to = s.edges[e + s.e.to_node] / s.nf;
      const nameOrIndex = s.edges[e + s.e.name_or_index];
      const ename = etype === 'element' || etype === 'hidden' ? `[${nameOrIndex}]` : s.strings[nameOrIndex];
      retainers[to].push({ from: i, ename });
    }
  }
  const label = (i) => key(s, i * s.nf);
  const chains = new Map();
  for (let i = 0; i < n; i++) {
    if (label(i) !== values.retainers && s.strings[s.nodes[i * s.nf + s.f.name]] !== values.retainers) continue;
    let cur = i;
    const parts = [];
    for (let d = 0; d < Number(values.depth ?? 2); d++) {
      const r = retainers[cur][0];
      if (!r) break;
      parts.push(`${r.ename}<-${label(r.from)}`);
      cur = r.from;
    }
    const c = parts.join('  ');
    const t = chains.get(c) ?? { count: 0, size: 0 };
    t.count++;
    t.size += s.nodes[i * s.nf + s.f.self_size];
    chains.set(c, t);
  }
  console.log(`\nretainer chains of ${values.retainers} (first retainer each level):`);
  const sorted = [...chains].sort((x, y) => y[1].size - x[1].size).slice(0, top);
  for (const [c, { count, size }] of sorted) console.log(`${String(count).padStart(7)} ${String(size).padStart(9)} B  ${c}`);
}

// --cut 'Ctor.edge,Ctor.edge,...' (edge `*` for all of a constructor's edges): for the last file, what
// becomes unreachable from the root when each owner's edges are cut in turn (its retained size, given
// the owners cut before it), per --per unit. E.g. 'Authenticator.#cache,LeaseKeeper.#held,Session.*'.
if (values.cut) {
  const s = snaps[snaps.length - 1];
  const n = s.nodes.length / s.nf;
  const firstEdge = firstEdges(s);
  const edgeName = (e) => {
    const t = s.etypes[s.edges[e + s.e.type]];
    const v = s.edges[e + s.e.name_or_index];
    return t === 'element' || t === 'hidden' ? `[${v}]` : s.strings[v];
  };
  const cuts = [];
  const reachable = () => {
    const seen = new Uint8Array(n);
    const stack = [0];
    seen[0] = 1;
    let size = 0;
    while (stack.length > 0) {
      const i = stack.pop();
      size += s.nodes[i * s.nf + s.f.self_size];
      const ctor = s.strings[s.nodes[i * s.nf + s.f.name]];
      for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += s.ef) {
        if (s.etypes[s.edges[e + s.e.type]] === 'weak') continue;
        if (cuts.some(([c, edge]) => c === ctor && (edge === '*' || edge === edgeName(e)))) continue;
        const to = s.edges[e + s.e.to_node] / s.nf;
        if (!seen[to]) {
          seen[to] = 1;
          stack.push(to);
        }
      }
    }
    return size;
  };
  let before = reachable();
  console.log(`\nretained by owner, cut in turn (reachable ${(before / 2 ** 20).toFixed(2)} MB):`);
  for (const owner of values.cut.split(',')) {
    const dot = owner.indexOf('.');
    cuts.push([owner.slice(0, dot), owner.slice(dot + 1)]);
    const after = reachable();
    console.log(`${((before - after) / per).toFixed(1).padStart(10)} B/unit  ${owner}`);
    before = after;
  }
}
