// The connection floor of an admission: an HTTP server and ws (noServer, no deflate), as the gateway and the
// minimal gateway use them, that answers every upgrade with its 101 and one `granted` frame at once: no token,
// no store, no state. The pinned latency phase runs it on the gateway's core, to measure what a new TCP
// connection and a WebSocket upgrade alone cost on this machine. Plain node, like dist/main.js. Prints {"port":N}.
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false,
  handleProtocols: (p) => (p.has('sigma-stream.v1') ? 'sigma-stream.v1' : false),
});
const server = createServer((_req, res) => res.writeHead(404).end());
server.on('upgrade', (req, socket, head) =>
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    ws.send('{"type":"granted"}');
  }),
);
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n'));
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
