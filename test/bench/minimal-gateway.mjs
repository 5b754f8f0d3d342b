// The CPU baseline for an admission: a gateway reduced to what no gateway can skip, on the same libraries.
// An HTTP server, ws (noServer, no deflate), the bearer token checked with HS256 (node:crypto, sync),
// the fast-path conditional UpdateItem through a client made by dist/dynamo.js createClient (as the
// gateway's), with an abort signal as the gateway passes one, then one `granted` frame. No logs, no
// metrics, no release, no limits, no liveness. Plain node, like dist/main.js. Prints {"port":N}.
// Env: DYNAMODB_ENDPOINT, DYNAMODB_TABLE, JWT_SECRET.
/* global AbortController */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { WebSocketServer } from 'ws';
import { createClient } from '../../dist/dynamo.js';

const table = process.env.DYNAMODB_TABLE;
const secret = Buffer.from(process.env.JWT_SECRET ?? '');
const client = createClient({ endpoint: process.env.DYNAMODB_ENDPOINT, requestTimeoutMs: 5000, maxAttempts: 3 });
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false,
  handleProtocols: (p) => (p.has('sigma-stream.v1') ? 'sigma-stream.v1' : false),
});

function userOf(token) {
  const [h, p, s] = token.split('.');
  const mac = createHmac('sha256', secret).update(`${h}.${p}`).digest();
  const sig = Buffer.from(s ?? '', 'base64url');
  if (sig.length !== mac.length || !timingSafeEqual(sig, mac)) return undefined;
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  return claims.exp > Date.now() / 1000 && typeof claims.sub === 'string' ? claims.sub : undefined;
}

async function admit(ws, token, device) {
  const user = token === undefined ? undefined : userOf(token);
  if (user === undefined) return ws.close(4401, 'unauthorized');
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 10_000);
  try {
    await client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { pk: { S: `user#${user}` } },
        UpdateExpression: 'SET #lease = :lease ADD #n :one, #v :one',
        ConditionExpression: 'attribute_not_exists(#lease) AND (attribute_not_exists(#n) OR #n < :limit)',
        ExpressionAttributeNames: { '#lease': `lease:${device}`, '#n': 'n', '#v': 'v' },
        ExpressionAttributeValues: {
          ':lease': { M: { leaseId: { S: randomUUID() }, instanceId: { S: 'minimal' }, acquiredAt: { N: String(Date.now()) } } },
          ':one': { N: '1' },
          ':limit': { N: '3' },
        },
        ReturnValues: 'UPDATED_NEW',
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }),
      { abortSignal: abort.signal },
    );
    ws.send('{"type":"granted"}');
  } catch {
    ws.close(1013, 'try again later');
  } finally {
    clearTimeout(timer);
  }
}

const server = createServer((_req, res) => res.writeHead(404).end());
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const auth = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    void admit(ws, auth?.[1], url.searchParams.get('device') ?? 'tv');
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n'));
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
