/**
 * The raw UpdateItem of phase 1 (admission.ts rawAcquire), sent from a process of its own so that the pinned
 * latency phase can put it on the gateway's core: the store round trip as the gateway's core sees it.
 *
 * Protocol (IPC): the child sends 'ready'; the parent sends {table, user}; the child sends the UpdateItem's
 * duration in ms, measured here, so the IPC hop is not in it.
 */
import { rawAcquire, rawClient } from './admission.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const client = rawClient(process.env.DYNAMODB_ENDPOINT ?? '');
process.on('message', (m: { table: string; user: string }) => {
  const t0 = performance.now();
  rawAcquire(client, m.table, m.user).then(
    () => process.send!(performance.now() - t0),
    (err: unknown) => process.send!({ error: String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send!('ready');
