/**
 * What a killed relay leaves in its journal, made the way a crash makes it: a child process appends
 * the messages to an IngestJournal (each acknowledged: written and synced, none routed) and is killed
 * with SIGKILL. Not an IngestJournal in the test's own process: one with messages that are never
 * routed can never be closed (its checkpoint waits for them), and its segment's descriptor is then
 * closed by the garbage collector, with Node's "Closing file descriptor … on garbage collection".
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from './env.ts';

export interface JournaledMessage {
  readonly sesMessageId: string;
  readonly recipient: string;
  readonly raw: Buffer;
}

/**
 * Journals `messages` in `journalDir` from a process that is then killed; returns the segment's
 * name, its pid part replaced by `deadPid` (a pid no process has), so that recovery takes it for a
 * dead process's whatever pids the system hands out meanwhile.
 */
export async function killedRelaySegment(
  journalDir: string,
  messages: readonly JournaledMessage[],
  deadPid = 999_999_990,
): Promise<string> {
  const script = `
    import { IngestJournal } from './functions/local/ingest-journal.ts';
    import { buildNotification } from './functions/core/notification.ts';
    import { UNCHECKED_VERDICTS } from './functions/core/routing.ts';
    import { LOCAL_BUCKET } from './functions/local/ingest.ts';
    const [dir] = process.argv.slice(1);
    const chunks = [];
    for await (const c of process.stdin) chunks.push(c);
    const journal = new IngestJournal(dir, async () => {});
    for (const m of JSON.parse(Buffer.concat(chunks).toString())) {
      await journal.append({
        type: 'ingest',
        notification: buildNotification({ sesMessageId: m.sesMessageId, receivedAt: new Date(),
          mailFrom: 'a@remote.test', recipients: [m.recipient], verdicts: UNCHECKED_VERDICTS, bucketName: LOCAL_BUCKET }),
        raw: Buffer.from(m.raw, 'base64'),
      });
    }
    process.stdout.write('journaled\\n');
    setInterval(() => {}, 1000);
  `;
  const payload = JSON.stringify(
    messages.map((m) => ({
      sesMessageId: m.sesMessageId,
      recipient: m.recipient,
      raw: m.raw.toString('base64'),
    })),
  );
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script, journalDir],
    { cwd: PROJECT_ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  // On stdin, not in argv: a message of a few hundred KB is past Linux's limit for one argument.
  child.stdin.end(payload);
  const exited = once(child, 'exit');
  const journaled = await new Promise<boolean>((resolve) => {
    child.stdout.once('data', () => resolve(true));
    exited.then(
      () => resolve(false),
      () => resolve(false),
    );
  });
  child.kill('SIGKILL');
  await exited;
  if (!journaled) throw new Error('the journaling child ended before it journaled (see its stderr)');
  const segment = readdirSync(journalDir).find((f) => f.startsWith(`${child.pid}-`));
  if (segment === undefined) throw new Error(`no segment of pid ${child.pid} in ${journalDir}`);
  const orphan = segment.replace(/^\d+-/, `${deadPid}-`);
  renameSync(join(journalDir, segment), join(journalDir, orphan));
  return orphan;
}
