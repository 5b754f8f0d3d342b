// Preloaded (node --expose-gc --import) into both servers the memory phase measures:
// SIGUSR2 runs a full garbage collection, so RSS can be read without the heap headroom
// an admission burst leaves behind, the same way for the gateway and the bare ws server.
// With GC_PROBE_FILE set, it also writes process.memoryUsage() right after the collection there
// (heap used then is what survives, without the garbage of the seconds until /metrics is read).
import { writeFileSync } from 'node:fs';

if (typeof globalThis.gc === 'function') {
  process.on('SIGUSR2', () => {
    globalThis.gc();
    if (process.env.GC_PROBE_FILE) writeFileSync(process.env.GC_PROBE_FILE, JSON.stringify(process.memoryUsage()));
  });
}
