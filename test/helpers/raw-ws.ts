/**
 * A WebSocket client on a raw TCP socket, for what a well-behaved library
 * will not send: unmasked frames, reserved opcodes, invalid UTF-8, random bytes.
 */
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect, type Socket } from 'node:net';

export interface RawFrame {
  opcode: number;
  payload: Buffer;
}

export interface RawClient {
  readonly socket: Socket;
  readonly frames: RawFrame[];
  /** Resolves when the server closes the TCP connection; carries the close code it sent, if any. */
  readonly ended: Promise<{ closeCode?: number; reason?: string }>;
  write(bytes: Buffer): void;
}

/** Builds one client frame; masked unless told otherwise. */
export function frame(opcode: number, payload: Buffer, opts: { mask?: boolean; fin?: boolean; rsv?: number } = {}): Buffer {
  const mask = opts.mask ?? true;
  const head: number[] = [((opts.fin ?? true) ? 0x80 : 0) | ((opts.rsv ?? 0) << 4) | opcode];
  const len = payload.length;
  if (len < 126) head.push((mask ? 0x80 : 0) | len);
  else if (len < 65536) head.push((mask ? 0x80 : 0) | 126, len >> 8, len & 0xff);
  else {
    head.push((mask ? 0x80 : 0) | 127, 0, 0, 0, 0);
    head.push((len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([Buffer.from(head), key, masked]);
}

function parseFrames(buf: Buffer, out: RawFrame[]): Buffer {
  for (;;) {
    if (buf.length < 2) return buf;
    let len = buf[1] & 0x7f;
    let offset = 2;
    if (len === 126) {
      if (buf.length < 4) return buf;
      len = buf.readUInt16BE(2);
      offset = 4;
    } else if (len === 127) {
      if (buf.length < 10) return buf;
      len = Number(buf.readBigUInt64BE(2));
      offset = 10;
    }
    if (buf.length < offset + len) return buf;
    out.push({ opcode: buf[0] & 0x0f, payload: buf.subarray(offset, offset + len) });
    buf = buf.subarray(offset + len);
  }
}

/** Opens a raw connection and completes the handshake; resolves once the 101 arrived. */
export function rawConnect(port: number, path: string, headers: Record<string, string>): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1');
    const frames: RawFrame[] = [];
    let head: Buffer = Buffer.alloc(0);
    let upgraded = false;
    let rest: Buffer = Buffer.alloc(0);
    const ended = new Promise<{ closeCode?: number; reason?: string }>((resolveEnd) => {
      socket.on('close', () => {
        const close = frames.find((f) => f.opcode === 0x8);
        resolveEnd(
          close && close.payload.length >= 2
            ? { closeCode: close.payload.readUInt16BE(0), reason: close.payload.subarray(2).toString() }
            : {},
        );
      });
    });
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      if (!upgraded) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        const status = head.subarray(0, end).toString().split('\r\n')[0];
        if (!status.includes(' 101 ')) {
          reject(new Error(`handshake refused: ${status}`));
          socket.destroy();
          return;
        }
        upgraded = true;
        rest = parseFrames(head.subarray(end + 4), frames);
        resolve({ socket, frames, ended, write: (bytes) => socket.write(bytes) });
        return;
      }
      rest = parseFrames(Buffer.concat([rest, chunk]), frames);
    });
    socket.on('connect', () => {
      const lines = [
        `GET ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        'Sec-WebSocket-Version: 13',
        ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      ];
      socket.write(lines.join('\r\n') + '\r\n\r\n');
    });
  });
}

/** A small seeded PRNG (mulberry32): failures replay with the same seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
