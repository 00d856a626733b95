/**
 * The POP3 bridge (`mail-relay pop3`): a POP3 server (RFC 1939, with RFC 2449's CAPA and RFC 2449 /
 * RFC 3206 response codes) for any mail client, in front of the mail-relay HTTP API, local or deployed.
 * USER is the mailbox address and PASS an API token for it: the bridge keeps no credentials of its own
 * and reads mail only through the API, so it works the same against `npm start` and an AWS stack.
 *
 * Session: at PASS the maildrop is listed once (oldest first: message 1 is the oldest; UIDL is the
 * message's id, stable across sessions), and stays that list until QUIT, as RFC 1939 asks; mail that
 * arrives meanwhile shows in the next session. DELE marks, RSET unmarks, QUIT deletes the marked ones
 * through the API (the UPDATE state). A mailbox is open in one session of a bridge at a time.
 * RETR and TOP stream the API's bytes, with CRLF line endings and dot-stuffing on the way out; a
 * client that leaves mid-answer cancels the API request (and with it the API's read of the blob).
 * A TOP the API will not answer in one response (`top_too_large`) is cut here from the whole message.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { ReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_TOP_LINES } from '../api/top.ts';
import { canonicalAddress } from '../core/config.ts';
import { ConfigError, errorMessage, isOutOfDescriptors } from '../core/errors.ts';
import { MAX_DELETE_MANY } from '../ports/mailbox-index.ts';
import { DEFAULT_POP3_PORT } from './ports.ts';

/** RFC 1939 §3: the autologout timer is at least 10 minutes. */
const IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** Dovecot's `auth_failure_delay`: a refused login is answered after this long. */
const AUTH_FAILURE_DELAY_MS = 2000;
/** Refused logins a session may have; the last one closes it. */
const MAX_AUTH_FAILURES = 3;
/** Commands are short (RFC 2449: 255 octets); a client sending kilobytes without a line end is not one. */
const MAX_LINE_BYTES = 4096;
/** Pipelined commands waiting for their turn before the bridge stops reading from the client. */
const MAX_QUEUED_COMMANDS = 64;
/** LIST pages of the API, as large as it allows. */
const LIST_PAGE = 1000;
/**
 * The arguments each command takes (RFC 1939, RFC 2449's CAPA); a command with more or fewer is
 * refused before it does anything. PASS is not here: its argument is the rest of the line (RFC 1939
 * §7 lets a password contain spaces).
 */
const SYNTAX: Readonly<
  Record<string, { readonly min: number; readonly max: number; readonly usage: string }>
> = {
  USER: { min: 1, max: 1, usage: 'USER <mailbox address>' },
  QUIT: { min: 0, max: 0, usage: 'QUIT' },
  CAPA: { min: 0, max: 0, usage: 'CAPA' },
  NOOP: { min: 0, max: 0, usage: 'NOOP' },
  STAT: { min: 0, max: 0, usage: 'STAT' },
  LIST: { min: 0, max: 1, usage: 'LIST [msg]' },
  UIDL: { min: 0, max: 1, usage: 'UIDL [msg]' },
  RETR: { min: 1, max: 1, usage: 'RETR msg' },
  TOP: { min: 2, max: 2, usage: 'TOP msg n' },
  DELE: { min: 1, max: 1, usage: 'DELE msg' },
  RSET: { min: 0, max: 0, usage: 'RSET' },
};

export interface Pop3BridgeOptions {
  /** The mail-relay HTTP API, e.g. `http://127.0.0.1:8025` or the stack's `ApiUrl` output. */
  readonly apiUrl: string;
  /** @default DEFAULT_POP3_PORT (1110); 0 picks a free port. */
  readonly port?: number;
  /** @default 127.0.0.1: clients send the token in clear text, so the bridge stays on loopback. */
  readonly host?: string;
  /** Idle time after which a session is closed, in milliseconds. @default 10 minutes */
  readonly idleTimeoutMs?: number;
  /** Receives unexpected errors of a session (the client sees `-ERR`). */
  readonly onError?: (err: unknown) => void;
  /**
   * How long a refused login (a token the API does not take for the mailbox) waits for its `-ERR`,
   * so that guessing tokens is slow; the third refusal in a session also closes it.
   * @default 2000 (Dovecot's auth_failure_delay)
   */
  readonly authFailureDelayMs?: number;
  /** Told of each refused login, for the log: the mailbox tried and the client's address. */
  readonly onAuthFailure?: (failure: { mailbox: string; remote: string }) => void;
}

export interface Pop3Bridge {
  readonly port: number;
  close(): Promise<void>;
}

interface Listed {
  readonly id: string;
  readonly size: number;
  deleted: boolean;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The API's error code (`not_found`, `top_too_large`, …), when it answered with one. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * The API's base URL, without a trailing slash or `/v1`: `http://127.0.0.1:8025`, `…/v1` and `…/v1/`
 * (what `mail-relay dev` prints) all name the same API, whose routes are under `<base>/v1/`.
 */
export function apiBaseUrl(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v1$/i, '').replace(/\/+$/, '');
}

/** The API as a POP3 session needs it: one mailbox, one token. */
class MailboxApi {
  private readonly base: string;
  /** False once the API turned out to have no batch delete (`deleteMany`). */
  private batchDelete = true;

  /** `signal` aborts reads (LIST, RETR, TOP) when the client leaves; QUIT's deletions run to the end. */
  constructor(
    apiUrl: string,
    mailbox: string,
    private readonly token: string,
    private readonly signal: AbortSignal,
  ) {
    this.base = `${apiBaseUrl(apiUrl)}/v1/mailboxes/${encodeURIComponent(mailbox)}`;
  }

  private async call(path: string, init: RequestInit = {}): Promise<Response> {
    const res = await fetch(`${this.base}${path}`, {
      signal: this.signal,
      ...init,
      headers: {
        ...(init.headers as Record<string, string> | undefined),
        Authorization: `Bearer ${this.token}`,
      },
      redirect: 'follow',
    });
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      let code: string | undefined;
      try {
        const body = (await res.json()) as { error?: { code?: string; message?: string } };
        if (body.error?.code) {
          code = body.error.code;
          message = `${code}: ${body.error.message ?? ''}`;
        }
      } catch {
        // Not our JSON error shape: the status says enough.
      }
      throw new ApiError(res.status, message, code);
    }
    return res;
  }

  /** Every message, oldest first. */
  async list(): Promise<Listed[]> {
    const out: Listed[] = [];
    let cursor: string | null = null;
    do {
      const query: string = `?limit=${LIST_PAGE}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
      const page = (await (await this.call(`/messages${query}`)).json()) as {
        items: { id: string; size: number; crlfSize?: number }[];
        nextCursor: string | null;
      };
      // The size as sent (CRLF line ends); an API from before `crlfSize` gives the stored size only.
      for (const item of page.items)
        out.push({ id: item.id, size: item.crlfSize ?? item.size, deleted: false });
      cursor = page.nextCursor;
    } while (cursor !== null);
    return out.reverse();
  }

  /** Whether the token reads the mailbox: throws as `list` does when it does not. */
  async check(): Promise<void> {
    await (await this.call('/messages?limit=1')).arrayBuffer();
  }

  async body(id: string, topLines?: number): Promise<Readable> {
    const path = `/messages/${encodeURIComponent(id)}${topLines === undefined ? '/raw' : `/top?lines=${topLines}`}`;
    const res = await this.call(path);
    if (res.body === null) return Readable.from([]);
    return Readable.fromWeb(res.body as ReadableStream<Uint8Array>);
  }

  /**
   * Deletes up to `MAX_DELETE_MANY` messages (one gone already counts as deleted) with the API's
   * batch delete, or one by one from an API that predates it. Not aborted by a client leaving
   * after QUIT.
   */
  async deleteMany(ids: readonly string[]): Promise<void> {
    if (this.batchDelete) {
      try {
        const res = await this.call('/messages/delete', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ ids }),
          signal: null,
        });
        await res.arrayBuffer();
        return;
      } catch (err) {
        // An API from before the batch delete: `…/messages/delete` is no endpoint there.
        if (!(err instanceof ApiError && (err.status === 405 || err.code === 'not_found'))) throw err;
        this.batchDelete = false;
      }
    }
    for (const id of ids) await this.delete(id);
  }

  async delete(id: string): Promise<void> {
    try {
      // Not aborted by a client leaving after QUIT: RFC 1939's UPDATE state is entered by QUIT alone.
      await this.call(`/messages/${encodeURIComponent(id)}`, { method: 'DELETE', signal: null });
    } catch (err) {
      // Gone already (another client, the retention sweeper): what DELE wanted.
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    }
  }
}

const CRLF = Buffer.from('\r\n');
const DOT = Buffer.from('.');

/**
 * Resolves when `socket` can take more, or is gone (then the writes are moot). A socket already
 * gone resolves at once: its 'close' has fired, and `write` returns false on it for ever.
 */
function writable(socket: Socket): Promise<void> {
  if (!socket.writable) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      socket.off('error', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
    socket.on('error', done);
  });
}

/**
 * Writes a message as a POP3 multi-line response body (RFC 1939 §3): every line ends in CRLF (a bare
 * LF, and a bare CR as classic Mac mail has them, become CRLF, as on an SMTP wire), a `.` is doubled
 * at the start of a line, a final CRLF is added if the message lacks one, then `.` CRLF.
 * With `bodyLines` (TOP) it stops after the headers, the blank line and that many body lines,
 * counting lines as they are sent (so a CR-only message is cut like any other).
 * Once done, or if the client goes away, leaving the loop destroys `source` (a Readable over the
 * API's response: that cancels the request), so nothing waits on a socket that will never drain.
 */
export async function writeDotStuffed(
  source: AsyncIterable<Uint8Array>,
  socket: Socket,
  bodyLines?: number,
): Promise<void> {
  let atLineStart = true;
  // The last byte was a CR, already sent as CRLF: an LF right after it belongs to that line end.
  let afterCr = false;
  // Bytes of the current line so far, across chunks (0 at a line end: a blank line).
  let lineBytes = 0;
  let inHeaders = true;
  let remaining = bodyLines ?? Number.POSITIVE_INFINITY;
  let cut = false;
  for await (const data of source) {
    if (!socket.writable) return;
    const chunk = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const parts: Buffer[] = [];
    let i = 0;
    // Where the next CR and LF are in this chunk (-1: none left), found again only once passed.
    let cr = -2;
    let lf = -2;
    while (i < chunk.length) {
      if (afterCr) {
        afterCr = false;
        if (chunk[i] === 0x0a) {
          i++;
          continue;
        }
      }
      if (atLineStart) {
        if (chunk[i] === 0x2e) parts.push(DOT);
        atLineStart = false;
      }
      if (cr !== -1 && cr < i) cr = chunk.indexOf(0x0d, i);
      if (lf !== -1 && lf < i) lf = chunk.indexOf(0x0a, i);
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      if (end < 0) {
        parts.push(chunk.subarray(i));
        lineBytes += chunk.length - i;
        break;
      }
      parts.push(chunk.subarray(i, end), CRLF);
      lineBytes += end - i;
      afterCr = chunk[end] === 0x0d;
      atLineStart = true;
      i = end + 1;
      if (inHeaders) inHeaders = lineBytes !== 0;
      else remaining -= 1;
      lineBytes = 0;
      if (!inHeaders && remaining <= 0) {
        cut = true;
        break;
      }
    }
    if (parts.length > 0 && !socket.write(Buffer.concat(parts))) await writable(socket);
    if (!socket.writable) return;
    if (cut) break;
  }
  socket.write(atLineStart ? '.\r\n' : '\r\n.\r\n');
}

class Session {
  private state: 'authorization' | 'transaction' = 'authorization';
  private user: string | null = null;
  private api: MailboxApi | null = null;
  private mailbox: string | null = null;
  private messages: Listed[] = [];
  private buffered: Buffer = Buffer.alloc(0);
  private lines: string[] = [];
  private busy = false;
  private closed = false;
  /** QUIT is deleting (RFC 1939's UPDATE state): the mailbox stays locked even if the client leaves. */
  private updating = false;
  /** Aborts the session's API reads when the client is gone. */
  private readonly aborter = new AbortController();
  private authFailures = 0;

  constructor(
    private readonly socket: Socket,
    private readonly options: Pop3BridgeOptions,
    private readonly locks: Set<string>,
  ) {
    // An answer is several writes (status line, message, `.` line); with Nagle's algorithm the last
    // waits for the ACK of the one before, which the client, with nothing to send, delays ~40 ms.
    socket.setNoDelay(true);
    socket.setTimeout(options.idleTimeoutMs ?? IDLE_TIMEOUT_MS, () => {
      // Mid-answer (a client that stopped reading a RETR), a line would land inside the message.
      if (this.busy) return void socket.destroy();
      this.reply('-ERR autologout: idle for too long');
      this.end();
    });
    socket.on('data', (data: Buffer) => this.receive(data));
    const gone = () => {
      this.closed = true;
      this.aborter.abort();
      if (!this.updating) this.release();
    };
    socket.on('close', gone);
    socket.on('error', gone);
    this.reply('+OK mail-relay POP3 bridge ready');
  }

  private reply(line: string): void {
    if (!this.closed) this.socket.write(`${line}\r\n`);
  }

  private end(): void {
    this.release();
    this.closed = true;
    this.socket.end();
  }

  private release(): void {
    if (this.mailbox !== null) this.locks.delete(this.mailbox);
    this.mailbox = null;
  }

  private receive(data: Buffer): void {
    this.buffered = this.buffered.length === 0 ? data : Buffer.concat([this.buffered, data]);
    for (;;) {
      const lf = this.buffered.indexOf(0x0a);
      if (lf < 0) break;
      const end = lf > 0 && this.buffered[lf - 1] === 0x0d ? lf - 1 : lf;
      this.lines.push(this.buffered.subarray(0, end).toString('latin1'));
      this.buffered = this.buffered.subarray(lf + 1);
    }
    if (this.buffered.length > MAX_LINE_BYTES) {
      this.reply('-ERR line too long');
      this.end();
      return;
    }
    // A client pipelining faster than the API answers waits in TCP, not in this process's memory.
    if (this.lines.length > MAX_QUEUED_COMMANDS) this.socket.pause();
    void this.drain();
  }

  /** Runs queued commands one at a time, in order (clients may pipeline them, RFC 2449). */
  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (let line = this.lines.shift(); line !== undefined && !this.closed; line = this.lines.shift()) {
        if (this.socket.isPaused() && this.lines.length < MAX_QUEUED_COMMANDS / 2) this.socket.resume();
        try {
          await this.command(line);
        } catch (err) {
          // The client left meanwhile (its API request was aborted): nobody to answer.
          if (this.closed) break;
          if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
            this.reply('-ERR [AUTH] the token is no longer valid for this mailbox');
            this.end();
          } else if (err instanceof ApiError && err.status < 500) {
            // The API refused this request: say why.
            this.reply(`-ERR ${oneLine(err)}`);
          } else if (isOutOfDescriptors(err)) {
            // The bridge's own open-files limit (it could not open a connection to the API): RFC 3206
            // SYS/TEMP, as the API's `503 out_of_resources` is; over once connections close.
            this.options.onError?.(err);
            this.reply(
              '-ERR [SYS/TEMP] the POP3 bridge is out of resources (too many open files); try again later',
            );
          } else {
            this.options.onError?.(err);
            this.reply(`-ERR [SYS/TEMP] the mail-relay API failed: ${oneLine(err)}`);
          }
        }
      }
    } finally {
      this.busy = false;
    }
  }

  private async command(line: string): Promise<void> {
    const space = line.indexOf(' ');
    const verb = (space < 0 ? line : line.slice(0, space)).toUpperCase();
    const arg = space < 0 ? '' : line.slice(space + 1);
    const args = arg.split(' ').filter((a) => a !== '');
    const syntax = SYNTAX[verb];
    if (syntax !== undefined && (args.length < syntax.min || args.length > syntax.max)) {
      const what = args.length < syntax.min ? 'missing argument' : 'too many arguments';
      return this.reply(`-ERR ${what}; usage: ${syntax.usage}`);
    }
    if (verb === 'QUIT') return this.quit();
    if (verb === 'CAPA') {
      this.reply('+OK capabilities follow');
      for (const c of [
        'USER',
        'TOP',
        'UIDL',
        'PIPELINING',
        'RESP-CODES',
        'AUTH-RESP-CODE',
        'IMPLEMENTATION mail-relay',
      ])
        this.reply(c);
      this.reply('.');
      return;
    }
    if (verb === 'NOOP' && this.state === 'transaction') return this.reply('+OK');
    if (this.state === 'authorization') return this.authorization(verb, args[0] ?? '', arg);
    switch (verb) {
      case 'STAT': {
        const live = this.messages.filter((m) => !m.deleted);
        return this.reply(`+OK ${live.length} ${live.reduce((n, m) => n + m.size, 0)}`);
      }
      case 'LIST':
      case 'UIDL': {
        const show = (n: number, m: Listed) => `${n} ${verb === 'LIST' ? m.size : m.id}`;
        if (args.length > 0) {
          const n = this.messageNumber(args[0]);
          if (n === null) return;
          return this.reply(`+OK ${show(n, this.messages[n - 1] as Listed)}`);
        }
        const live = this.messages.filter((m) => !m.deleted);
        this.reply(
          verb === 'LIST'
            ? `+OK ${live.length} messages (${live.reduce((n, m) => n + m.size, 0)} octets)`
            : `+OK ${live.length} messages`,
        );
        this.messages.forEach((m, i) => {
          if (!m.deleted) this.reply(show(i + 1, m));
        });
        return this.reply('.');
      }
      case 'RETR':
      case 'TOP': {
        const n = this.messageNumber(args[0]);
        if (n === null) return;
        let lines: number | undefined;
        if (verb === 'TOP') {
          if (!/^\d+$/.test(args[1] as string)) return this.reply('-ERR usage: TOP msg n');
          // RFC 1939: n past the end of the body gives the whole message; so does the API's maximum.
          lines = Math.min(Number(args[1]), MAX_TOP_LINES);
        }
        const m = this.messages[n - 1] as Listed;
        let body: Readable;
        try {
          body = await this.messageBytes(m.id, lines);
        } catch (err) {
          if (err instanceof ApiError && err.status === 404)
            return this.reply(`-ERR message ${n} no longer exists`);
          throw err;
        }
        if (this.closed) return void body.destroy();
        this.reply(verb === 'RETR' ? `+OK ${m.size} octets` : '+OK top of message follows');
        try {
          // TOP is cut here too: the API counts lines by LF alone, the wire by CR as well.
          await writeDotStuffed(body, this.socket, lines);
        } catch (err) {
          // Half a multi-line answer cannot be taken back: the client must not mistake it for the message.
          body.destroy();
          if (!this.closed) this.options.onError?.(err);
          this.socket.destroy();
          this.release();
          this.closed = true;
        }
        return;
      }
      case 'DELE': {
        const n = this.messageNumber(args[0]);
        if (n === null) return;
        (this.messages[n - 1] as Listed).deleted = true;
        return this.reply(`+OK message ${n} deleted`);
      }
      case 'RSET':
        for (const m of this.messages) m.deleted = false;
        return this.reply(`+OK maildrop has ${this.messages.length} messages`);
      default:
        return this.reply(`-ERR unknown command ${verb.slice(0, 16)}`);
    }
  }

  /**
   * What RETR sends, or TOP with `lines`: the API's TOP; when that answer is more than one API
   * response carries (`top_too_large`; POP3 has no such cap), the whole message (following the API's
   * redirect). writeDotStuffed cuts either after `lines` body lines.
   */
  private async messageBytes(id: string, lines: number | undefined): Promise<Readable> {
    const api = this.api as MailboxApi;
    try {
      return await api.body(id, lines);
    } catch (err) {
      if (lines === undefined || !(err instanceof ApiError && err.code === 'top_too_large')) throw err;
      return await api.body(id);
    }
  }

  /** The 1-based number of a listed, not deleted message, or null after answering -ERR. */
  private messageNumber(text: string | undefined): number | null {
    const n = text !== undefined && /^\d{1,9}$/.test(text) ? Number(text) : Number.NaN;
    const m = this.messages[n - 1];
    if (m === undefined) {
      this.reply('-ERR no such message');
      return null;
    }
    if (m.deleted) {
      this.reply(`-ERR message ${n} already deleted`);
      return null;
    }
    return n;
  }

  /** `name` is USER's argument, `rest` the line after the verb (PASS). */
  private async authorization(verb: string, name: string, rest: string): Promise<void> {
    if (verb === 'USER') {
      this.user = name;
      return this.reply('+OK send the API token for this mailbox as PASS');
    }
    if (verb !== 'PASS') return this.reply('-ERR USER and PASS first');
    const user = this.user;
    this.user = null;
    if (user === null) return this.reply('-ERR USER first');
    // The line was read as Latin-1 and a client sends a user name in UTF-8: the mailbox as the relay
    // keys it, whichever form it came in (`Info@München.de` is info@xn--mnchen-3ya.de, as in the API).
    const mailbox = canonicalAddress(Buffer.from(user, 'latin1').toString('utf8'));
    const api = new MailboxApi(this.options.apiUrl, mailbox, rest.trim(), this.aborter.signal);
    if (this.locks.has(mailbox)) {
      // RFC 2449: [IN-USE] says the login was right; a wrong token hears [AUTH], whoever is reading.
      try {
        await api.check();
      } catch (err) {
        return await this.refuseLogin(err, mailbox);
      }
      return this.reply('-ERR [IN-USE] the mailbox is open in another session');
    }
    this.locks.add(mailbox);
    this.mailbox = mailbox;
    try {
      this.messages = await api.list();
    } catch (err) {
      this.release();
      return await this.refuseLogin(err, mailbox);
    }
    if (this.closed) return this.release();
    this.api = api;
    this.state = 'transaction';
    const octets = this.messages.reduce((n, m) => n + m.size, 0);
    this.reply(`+OK ${mailbox} has ${this.messages.length} messages (${octets} octets)`);
  }

  /** Answers a PASS the API refused (rethrows what is not a refusal). */
  private async refuseLogin(err: unknown, mailbox: string): Promise<void> {
    // A 404 is not about the login: the listing exists for every mailbox, so the bridge's API URL
    // is wrong (`--api`). Said to the client and logged, not passed off as a bad password.
    if (err instanceof ApiError && err.status === 404) {
      this.options.onError?.(err);
      this.reply(`-ERR [SYS/PERM] the bridge's API URL is wrong: ${oneLine(err)}`);
    } else if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
      this.authFailures += 1;
      this.options.onAuthFailure?.({
        mailbox,
        remote: `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`,
      });
      await sleep(this.options.authFailureDelayMs ?? AUTH_FAILURE_DELAY_MS);
      if (this.authFailures < MAX_AUTH_FAILURES) {
        this.reply('-ERR [AUTH] no such mailbox, or the token is not valid for it');
      } else {
        this.reply(
          '-ERR [AUTH] no such mailbox, or the token is not valid for it; too many failed logins, closing',
        );
        this.end();
      }
    } else {
      throw err;
    }
  }

  private async quit(): Promise<void> {
    if (this.state === 'transaction' && this.api !== null) {
      const marked = this.messages.filter((m) => m.deleted);
      let failed = 0;
      // Until the deletions are done, another session would list messages about to go.
      this.updating = true;
      for (let i = 0; i < marked.length; i += MAX_DELETE_MANY) {
        const batch = marked.slice(i, i + MAX_DELETE_MANY);
        try {
          await this.api.deleteMany(batch.map((m) => m.id));
        } catch (err) {
          // Some of the batch may be gone: the client's next session lists what is left.
          failed += batch.length;
          this.options.onError?.(err);
        }
      }
      this.updating = false;
      if (failed > 0) {
        this.reply(
          `-ERR some deleted messages may not be removed (${failed} of ${marked.length} unconfirmed)`,
        );
        return this.end();
      }
      this.reply(`+OK bye, ${marked.length} message${marked.length === 1 ? '' : 's'} deleted`);
      return this.end();
    }
    this.reply('+OK bye');
    this.end();
  }
}

function oneLine(err: unknown): string {
  return errorMessage(err)
    .replace(/[\r\n]+/g, ' ')
    .slice(0, 200);
}

export async function startPop3Bridge(options: Pop3BridgeOptions): Promise<Pop3Bridge> {
  if (!/^https?:\/\/[^/]/.test(options.apiUrl)) {
    throw new ConfigError(
      `the POP3 bridge needs the API's http(s) URL, got ${JSON.stringify(options.apiUrl)}`,
    );
  }
  const locks = new Set<string>();
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    new Session(socket, options, locks);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_POP3_PORT, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
