// The memory baseline: a bare `ws` server that holds connections and pings them,
// nothing else. Plain JavaScript run by plain `node` (no tsx loader in its RSS),
// like the gateway's compiled dist/main.js. Prints {"port":N} once listening;
// answers {cmd:'stats'} over IPC with its RSS and event-loop delay since the last ask.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { WebSocketServer } from 'ws';

const pingIntervalMs = Number(process.env.PING_INTERVAL_MS ?? 20000);
const delay = monitorEventLoopDelay({ resolution: 10 });
delay.enable();

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.send('{"type":"granted"}');
});
wss.on('listening', () => process.stdout.write(JSON.stringify({ port: wss.address().port }) + '\n'));
setInterval(() => {
  for (const ws of wss.clients) ws.ping();
}, pingIntervalMs);

process.on('message', (msg) => {
  if (msg?.cmd !== 'stats') return;
  process.send({
    rssBytes: process.memoryUsage().rss,
    heapUsedBytes: process.memoryUsage().heapUsed,
    heapTotalBytes: process.memoryUsage().heapTotal,
    externalBytes: process.memoryUsage().external,
    newSpaceBytes: getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size,
    connections: wss.clients.size,
    lagMs: { p50: delay.percentile(50) / 1e6, p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 },
  });
  delay.reset();
});
process.on('disconnect', () => process.exit(0));
