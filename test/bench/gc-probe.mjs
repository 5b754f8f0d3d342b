// Preloaded (node --expose-gc --import) into both servers the memory phase measures:
// SIGUSR2 runs a full garbage collection, so RSS can be read without the heap headroom
// an admission burst leaves behind, the same way for the gateway and the bare ws server.
if (typeof globalThis.gc === 'function') process.on('SIGUSR2', () => globalThis.gc());
