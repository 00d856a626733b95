/**
 * The small message protocol between the harness and a process under test: the child says
 * `ready` (with its port or other facts), answers requests by type, and exits on `stop`.
 * Messages cross a process boundary, so both sides check their shape instead of trusting it.
 */

export type IpcMessage = { readonly type: string } & Readonly<Record<string, unknown>>;

export function isIpcMessage(value: unknown): value is IpcMessage {
  return (
    typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string'
  );
}

export function numberField(msg: IpcMessage, field: string): number {
  const value = msg[field];
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`message ${msg.type} has no numeric ${field}: ${JSON.stringify(msg)}`);
  }
  return value;
}

export function stringField(msg: IpcMessage, field: string): string {
  const value = msg[field];
  if (typeof value !== 'string')
    throw new Error(`message ${msg.type} has no string ${field}: ${JSON.stringify(msg)}`);
  return value;
}

/** Child side: send a message to the harness (no-op when not started by it). */
export function sendToParent(msg: IpcMessage): void {
  process.send?.(msg);
}

/**
 * Child side: answer the harness's requests. `stop` runs `onStop` and exits; any other request
 * goes to `handle`, whose reply is sent back. An error is reported instead of killing the child.
 */
export function serveRequests(
  handle: (msg: IpcMessage) => Promise<IpcMessage> | IpcMessage,
  onStop: () => Promise<void>,
): void {
  process.on('message', (raw: unknown) => {
    if (!isIpcMessage(raw)) return;
    if (raw.type === 'stop') {
      onStop().then(
        () => process.exit(0),
        (err: unknown) => {
          console.error(err);
          process.exit(1);
        },
      );
      return;
    }
    Promise.resolve()
      .then(() => handle(raw))
      .then(
        (reply) => sendToParent(reply),
        (err: unknown) =>
          sendToParent({ type: 'error', message: err instanceof Error ? err.message : String(err) }),
      );
  });
  // The harness died: do not linger as an orphan server.
  process.on('disconnect', () => {
    onStop().finally(() => process.exit(0));
  });
}
