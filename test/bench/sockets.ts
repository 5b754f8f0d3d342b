/** Client-side socket helpers shared by the bench process and the client child processes. */
import WebSocket from 'ws';

/** Closes every socket with 1000 and waits for the closes; a peer that never answers is cut after 3 s. */
export function closeAll(sockets: readonly WebSocket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          ws.once('close', () => resolve());
          ws.close(1000);
          setTimeout(() => (ws.terminate(), resolve()), 3000).unref();
        }),
    ),
  ).then(() => undefined);
}
