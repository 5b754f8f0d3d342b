/** A TCP relay in front of a gateway, to play the network between a device and it. */
import net from 'node:net';

export interface TcpRelay {
  /** ws:// address of the relay. */
  readonly url: string;
  /** Destroys every relayed socket at once (a network switch, a NAT that forgot the flow): both ends see it end. */
  cut(): void;
  /** Stops forwarding both ways without closing anything (a path gone silent). */
  freeze(): void;
}

/** A relay to the gateway at `targetUrl`; it closes with the test. */
export async function tcpRelay(t: { after(fn: () => Promise<void>): void }, targetUrl: string): Promise<TcpRelay> {
  const target = new URL(targetUrl.replace('ws:', 'http:'));
  const sockets = new Set<net.Socket>();
  let frozen = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('error', () => {});
      from.on('close', () => {
        sockets.delete(from);
        if (!frozen) to.destroy(); // a frozen path tells neither end
      });
      from.on('data', (chunk) => {
        if (!frozen) to.write(chunk);
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(
    () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      }),
  );
  return {
    url: `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    freeze: () => {
      frozen = true;
    },
  };
}
