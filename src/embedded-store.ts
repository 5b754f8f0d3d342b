/**
 * dynalite (a DynamoDB implementation on LevelDB, here in memory) in this
 * process, so a fresh clone serves with `npm start` and no setup. Leases live
 * only as long as the process: refused in production by config.ts.
 */
export interface EmbeddedStore {
  readonly endpoint: string;
  close(): Promise<void>;
}

export async function startEmbeddedStore(): Promise<EmbeddedStore> {
  // Loaded only when used: production images never touch it.
  const { default: dynalite } = await import('dynalite');
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
