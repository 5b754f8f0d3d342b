/**
 * A tiny SVG writer for the report: a CDF of latency samples, one line per
 * series. No browser, no dependency; the output is plain text that GitHub
 * renders inline.
 */

export interface Series {
  label: string;
  color: string;
  /** Milliseconds. */
  values: readonly number[];
}

const W = 720;
const H = 400;
const M = { left: 60, right: 20, top: 40, bottom: 50 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceStep(span: number, ticks: number): number {
  const raw = span / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? raw;
}

/** Empirical CDFs on a linear ms axis cut at the largest series' 99.5th percentile (stated in the title). */
export function cdfSvg(title: string, series: readonly Series[]): string {
  const sorted = series.map((s) => [...s.values].sort((a, b) => a - b));
  const cut = Math.max(...sorted.map((v) => v[Math.min(v.length - 1, Math.floor(v.length * 0.995))] ?? 0)) * 1.05;
  const x = (ms: number): number => M.left + (Math.min(ms, cut) / cut) * (W - M.left - M.right);
  const y = (q: number): number => H - M.bottom - q * (H - M.top - M.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  const step = niceStep(cut, 8);
  for (let t = 0; t <= cut; t += step) {
    out.push(`<line x1="${x(t)}" y1="${y(0)}" x2="${x(t)}" y2="${y(1)}" stroke="#eee"/>`);
    out.push(`<text x="${x(t)}" y="${y(0) + 16}" text-anchor="middle">${+t.toFixed(2)}</text>`);
  }
  for (const q of [0, 0.25, 0.5, 0.75, 0.9, 0.99, 1]) {
    out.push(`<line x1="${M.left}" y1="${y(q)}" x2="${W - M.right}" y2="${y(q)}" stroke="#eee"/>`);
    out.push(`<text x="${M.left - 6}" y="${y(q) + 4}" text-anchor="end">${q}</text>`);
  }
  out.push(`<text x="${W / 2}" y="${H - 12}" text-anchor="middle">milliseconds</text>`);
  out.push(`<text x="16" y="${H / 2}" text-anchor="middle" transform="rotate(-90 16 ${H / 2})">fraction of admissions</text>`);
  out.push(`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#999"/>`);
  sorted.forEach((values, i) => {
    const s = series[i];
    // One point per 1/400 of the distribution keeps the file small.
    const stride = Math.max(1, Math.floor(values.length / 400));
    const pts: string[] = [`${x(values[0] ?? 0).toFixed(1)},${y(0).toFixed(1)}`];
    for (let k = 0; k < values.length; k += stride) pts.push(`${x(values[k]).toFixed(1)},${y((k + 1) / values.length).toFixed(1)}`);
    pts.push(`${x(values[values.length - 1] ?? 0).toFixed(1)},${y(1).toFixed(1)}`);
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.join(' ')}"/>`);
    out.push(`<rect x="${W - M.right - 230}" y="${y(0.3) + i * 18}" width="12" height="12" fill="${s.color}"/>`);
    out.push(`<text x="${W - M.right - 212}" y="${y(0.3) + i * 18 + 11}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
