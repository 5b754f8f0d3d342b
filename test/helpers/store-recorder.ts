/**
 * A stand-in DynamoDB endpoint on 127.0.0.1 that records every request and answers as the test says: for
 * what the store client puts on the wire (src/direct.ts, src/dynamo.ts), which DynamoDB Local cannot show.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly body: string;
}

/** Answers the n-th request (from 1); answering nothing leaves it hanging. */
export type Answer = (req: IncomingMessage, res: ServerResponse, n: number) => void;

export async function recorder(answer: Answer): Promise<{ endpoint: string; seen: Seen[]; server: Server; close(): void }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString(),
      });
      answer(req, res, seen.length);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    seen,
    server,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** A JSON answer as DynamoDB sends one. */
export function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/x-amz-json-1.0',
    'Content-Length': Buffer.byteLength(text),
    'x-amzn-RequestId': 'r1',
  });
  res.end(text);
}

/**
 * The fast path's conditional UpdateItem, with non-ASCII in a name and a value (the body's length and
 * hash are of bytes, not characters) and a BOOL, as the lease entries carry.
 */
export const updateItem = (): UpdateItemCommand =>
  new UpdateItemCommand({
    TableName: 't',
    Key: { pk: { S: 'user#ann' } },
    UpdateExpression: 'SET #lease = :lease ADD #n :one',
    ConditionExpression: 'attribute_not_exists(#lease)',
    ExpressionAttributeNames: { '#lease': 'lease:tv  é', '#n': 'n' },
    ExpressionAttributeValues: { ':lease': { M: { leaseId: { S: 'l1 ✓' }, counted: { BOOL: true } } }, ':one': { N: '1' } },
    ReturnValues: 'UPDATED_NEW',
    ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
  });

/** Answers every request with an UpdateItem's success. */
export const ok: Answer = (_req, res) => json(res, 200, { Attributes: { n: { N: '1' } } });
