#!/usr/bin/env python3
"""
Soak of the local relay as `npm start` runs it: mixed traffic for SOAK_SECONDS, resource samples every
30 s, then the invariants a user relies on. Not part of `npm test` (it runs for minutes).

    python3 bench/soak.py                      # 15 minutes; SOAK_SECONDS=600 for 10
    SOAK_DIR=/tmp/soak SOAK_CORPUS=/path/to/emls SOAK_HEAPSNAP=120,800 python3 bench/soak.py
    (the corpus: SOAK_CORPUS, else $MAIL_RELAY_CORPUS, else ../shared/corpus beside the checkout)

It builds dist/local (scripts/build-local.mjs), starts `node --max-semi-space-size=4 dist/local/cli.mjs
dev` and `node bin/mail-relay.js pop3` on free loopback ports with a data dir and a config file under
SOAK_DIR (retention.mailboxDays 1), and runs, each in a thread with pauses (about one core's worth):
SMTP one message per connection (the corpus, made CRLF) and pipelined (3-8 per connection), 2-7 MB
messages, connections dropped mid-DATA (FIN or RST, small and spooled), API LIST with cursors / GET /
raw / top / parts / PATCH seen, long-polls completed and abandoned, DELETE one and DELETE all, POP3
sessions (python poplib, with and without QUIT; DELE only counts after QUIT) and mpop, tokens
created and revoked (a revoked one must get 401), config edits while running, and old-dated
imports for the retention sweep. A sample line: dev and pop3 [RSS MB, fds, sockets, files], data dir,
WAL, journal, spool and temp files, log size. At the end: every message answered 250 is readable
byte-exact (the stored message ends with what was sent), deleted ones stay 404, STAT = LIST (count and
bytes) in every mailbox and over POP3; dev stops on SIGTERM within 5 s, `compact` runs, dev starts
again on the same data dir (its retention sweep empties old@) and the checks pass again.
SOAK_HEAPSNAP: seconds at which dev writes a heap snapshot (--heapsnapshot-signal) to SOAK_DIR.
"""
import base64, hashlib, http.client, json, os, poplib, random, re, signal, smtplib, socket, subprocess
import sys, threading, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
DURATION = float(os.environ.get('SOAK_SECONDS', '900'))
WORK = os.environ.get('SOAK_DIR', '/tmp/soak-run')
DATA = os.path.join(WORK, 'data')
CFG = os.path.join(WORK, 'mail-relay.config.json')
CORPUS = os.environ.get('SOAK_CORPUS') or os.environ.get('MAIL_RELAY_CORPUS') or os.path.join(ROOT, '..', 'shared', 'corpus')
HEAPSNAP = [int(x) for x in os.environ.get('SOAK_HEAPSNAP', '').split(',') if x]  # seconds at which to snapshot dev's heap
poplib._MAXLINE = 1 << 20  # corpus messages have lines longer than poplib's 2048
rnd = random.Random(int(os.environ.get('SOAK_SEED', '1')))
lock = threading.Lock()
stop = threading.Event()


def say(*a):
    line = time.strftime('%H:%M:%S ') + ' '.join(str(x) for x in a)
    print(line, flush=True)


def free_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p


SMTP_PORT, API_PORT, POP3_PORT = free_port(), free_port(), free_port()
ENV = {k: v for k, v in os.environ.items() if not k.startswith('MAIL_RELAY_')}
ENV.update(MAIL_RELAY_DATA_DIR=DATA, MAIL_RELAY_CONFIG=CFG, MAIL_RELAY_SMTP_PORT=str(SMTP_PORT),
           MAIL_RELAY_API_PORT=str(API_PORT), MAIL_RELAY_POP3_PORT=str(POP3_PORT))

# ---------------------------------------------------------------- corpus
corpus = []
for r, _, fs in os.walk(CORPUS):
    for f in sorted(fs):
        if f.endswith(('.md', '.tsv')) or f.startswith('.'):
            continue
        b = open(os.path.join(r, f), 'rb').read()
        # CRLF everywhere and a final CRLF: what we send is then what must come back after the trace headers
        b = re.sub(rb'\r?\n', b'\r\n', b.replace(b'\r\n', b'\n').replace(b'\r', b'\n'))
        if not b.endswith(b'\r\n'):
            b += b'\r\n'
        corpus.append(b)
corpus.sort(key=len)
say('corpus', len(corpus), 'messages')

MAILBOXES = [f'user{i}@example.test' for i in range(8)]
PURGE = 'purge@example.test'  # emptied with DELETE all
POPBOX = 'pop@example.test'   # read and deleted over POP3

# ground truth: id -> (mailbox, sha256 of sent bytes, len)
sent = {}
deleted = set()
counts = {k: 0 for k in ['smtp_ok', 'smtp_fail', 'pipelined', 'big', 'dropped_data', 'api', 'api_err', 'waits',
                         'wait_abandoned', 'patch', 'del1', 'delall', 'pop_quit', 'pop_drop', 'pop_dele',
                         'mpop', 'tok_create', 'tok_revoke', 'cfg_edit', 'import_old']}
errors = []


def bump(k, n=1):
    with lock:
        counts[k] += n


def err(msg):
    with lock:
        errors.append(time.strftime('%H:%M:%S ') + msg)
    say('ERROR', msg)


def unique(b):
    """Give the message a unique first header so identical corpus messages stay distinct."""
    return b'X-Soak: %d-%d\r\n' % (time.time_ns(), rnd.randrange(1 << 30)) + b


def record(reply, mailbox, body):
    m = re.search(rb'queued as (\w+)', reply)
    if not m:
        err(f'250 without id: {reply!r}')
        return
    with lock:
        sent[m.group(1).decode()] = (mailbox, hashlib.sha256(body).hexdigest(), len(body))


# ---------------------------------------------------------------- processes
def start_dev():
    out = open(os.path.join(WORK, 'dev.log'), 'ab')
    extra = ['--heapsnapshot-signal=SIGUSR2', f'--diagnostic-dir={WORK}'] if HEAPSNAP else []
    p = subprocess.Popen(['node', *extra, '--max-semi-space-size=4', 'dist/local/cli.mjs', 'dev'], cwd=ROOT, env=ENV,
                         stdout=out, stderr=subprocess.STDOUT)
    procs.append(p)
    for _ in range(300):
        try:
            socket.create_connection(('127.0.0.1', SMTP_PORT), 1).close()
            break
        except OSError:
            time.sleep(0.1)
    return p


def start_pop3():
    out = open(os.path.join(WORK, 'pop3.log'), 'ab')
    p = subprocess.Popen(['node', 'bin/mail-relay.js', 'pop3'], cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    procs.append(p)
    for _ in range(300):
        try:
            socket.create_connection(('127.0.0.1', POP3_PORT), 1).close()
            break
        except OSError:
            time.sleep(0.1)
    return p


def cli(*args, input=None):
    return subprocess.run(['node', 'bin/mail-relay.js', *args], cwd=ROOT, env=ENV, capture_output=True,
                          input=input, timeout=120)


# ---------------------------------------------------------------- http
def req(method, path, token, body=None, headers=None, timeout=60):
    c = http.client.HTTPConnection('127.0.0.1', API_PORT, timeout=timeout)
    h = {'Authorization': f'Bearer {token}'}
    if headers:
        h.update(headers)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    loc = r.getheader('Location')
    c.close()
    if r.status == 307 and loc:
        u = loc.split('127.0.0.1:%d' % API_PORT, 1)[-1]
        c = http.client.HTTPConnection('127.0.0.1', API_PORT, timeout=timeout)
        c.request('GET', u)
        r2 = c.getresponse()
        data = r2.read(); c.close()
        return r2.status, data
    return r.status, data


def mb(a):
    return '/v1/mailboxes/' + a


# ---------------------------------------------------------------- workers
def loop(fn, pause):
    def run():
        while not stop.is_set():
            try:
                fn()
            except Exception as e:  # noqa
                err(f'{fn.__name__}: {type(e).__name__}: {e}')
                time.sleep(1)
            stop.wait(pause())
    t = threading.Thread(target=run, name=fn.__name__, daemon=True)
    t.start()
    return t


def smtp_single():
    box = rnd.choice(MAILBOXES + [PURGE, POPBOX])
    body = unique(rnd.choice(corpus))
    with smtplib.SMTP('127.0.0.1', SMTP_PORT, timeout=120) as s:
        s.ehlo('soak.test')
        s.mail('sender@soak.test')
        s.rcpt(box)
        code, reply = s.data(body)
        if code == 250:
            record(reply, box, body); bump('smtp_ok')
        else:
            bump('smtp_fail'); err(f'DATA {code} {reply!r}')


def smtp_pipelined():
    """Several messages on one connection, each transaction's MAIL/RCPT/DATA written at once."""
    n = rnd.randint(3, 8)
    msgs = [(rnd.choice(MAILBOXES + [POPBOX]), unique(rnd.choice(corpus))) for _ in range(n)]
    s = socket.create_connection(('127.0.0.1', SMTP_PORT), 60)
    f = s.makefile('rb')

    def reply():
        lines = []
        while True:
            l = f.readline()
            if not l:
                raise EOFError('closed')
            lines.append(l)
            if l[3:4] != b'-':
                return lines[-1]
    reply()
    s.sendall(b'EHLO soak.test\r\n'); reply()
    for box, body in msgs:
        s.sendall(b'MAIL FROM:<p@soak.test>\r\nRCPT TO:<%s>\r\nDATA\r\n' % box.encode())
        r1, r2, r3 = reply(), reply(), reply()
        if not r3.startswith(b'354'):
            err(f'pipelined {r1!r} {r2!r} {r3!r}'); break
        stuffed = re.sub(rb'(?m)^\.', b'..', body)
        s.sendall(stuffed + b'.\r\n')
        r = reply()
        if r.startswith(b'250'):
            record(r, box, body); bump('smtp_ok'); bump('pipelined')
        else:
            err(f'pipelined DATA {r!r}')
    s.sendall(b'QUIT\r\n'); reply(); s.close()


def big_body(size):
    boundary = b'soakboundary'
    payload = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b'\n', b'\r\n')
    return unique(b'From: big@soak.test\r\nTo: x@example.test\r\nSubject: big %d\r\nMIME-Version: 1.0\r\n'
                  b'Content-Type: multipart/mixed; boundary="%s"\r\n\r\n--%s\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
                  b'--%s\r\nContent-Type: application/octet-stream; name="blob.bin"\r\nContent-Transfer-Encoding: base64\r\n'
                  b'Content-Disposition: attachment; filename="blob.bin"\r\n\r\n' % (size, boundary, boundary, boundary)
                  + payload + b'--%s--\r\n' % boundary)


def smtp_big():
    box = rnd.choice(MAILBOXES)
    body = big_body(rnd.randint(2, 7) * 1024 * 1024)
    with smtplib.SMTP('127.0.0.1', SMTP_PORT, timeout=300) as s:
        s.ehlo('soak.test')
        s.mail('big@soak.test'); s.rcpt(box)
        code, reply = s.data(body)
        if code == 250:
            record(reply, box, body); bump('smtp_ok'); bump('big')
        else:
            err(f'big DATA {code} {reply!r}')


def smtp_drop_mid_data():
    """DATA started, part of the message sent, then the connection reset (small or large: the spool)."""
    big = rnd.random() < 0.4
    body = big_body(rnd.randint(2, 4) * 1024 * 1024) if big else unique(rnd.choice(corpus))
    s = socket.create_connection(('127.0.0.1', SMTP_PORT), 60)
    f = s.makefile('rb')
    f.readline()
    s.sendall(b'HELO soak.test\r\n'); f.readline()
    s.sendall(b'MAIL FROM:<d@soak.test>\r\n'); f.readline()
    s.sendall(b'RCPT TO:<%s>\r\n' % rnd.choice(MAILBOXES).encode()); f.readline()
    s.sendall(b'DATA\r\n'); f.readline()
    s.sendall(body[: max(1, len(body) * rnd.randint(1, 9) // 10)])
    time.sleep(rnd.random() * 0.5)
    if rnd.random() < 0.5:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')  # RST
    s.close()
    bump('dropped_data')


def api_reader():
    box = rnd.choice(MAILBOXES)
    cursor = None
    ids = []
    for _ in range(rnd.randint(1, 4)):
        q = f'?limit={rnd.choice([5, 20, 100])}' + (f'&cursor={cursor}' if cursor else '')
        st, d = req('GET', mb(box) + '/messages' + q, ADMIN)
        bump('api')
        if st != 200:
            err(f'LIST {st} {d[:200]!r}'); return
        j = json.loads(d)
        ids += [i['id'] for i in j['items']]
        cursor = j['nextCursor']
        if not cursor:
            break
    for mid in rnd.sample(ids, min(4, len(ids))):
        for suffix in ['', '/raw', '/top?lines=3']:
            st, d = req('GET', mb(box) + f'/messages/{mid}{suffix}', ADMIN)
            bump('api')
            if st == 404 and mid in deleted:
                continue
            if st not in (200,):
                if st == 404:
                    continue  # deleted by another worker meanwhile
                err(f'GET {suffix} {st} {d[:200]!r}')
            if suffix == '' and st == 200:
                for a in json.loads(d).get('attachments', [])[:2]:
                    st2, d2 = req('GET', mb(box) + f'/messages/{mid}/parts/{a["partId"]}', ADMIN)
                    bump('api')
                    if st2 not in (200, 404):
                        err(f'part {st2}')
        if rnd.random() < 0.5:
            st, _ = req('PATCH', mb(box) + f'/messages/{mid}', ADMIN, json.dumps({'seen': rnd.random() < 0.5}),
                         {'Content-Type': 'application/json'})
            bump('patch')
            if st not in (200, 204, 404):
                err(f'PATCH {st}')


def long_poll_abandon():
    """A /wait the client gives up on: the socket closed after a moment."""
    box = rnd.choice(MAILBOXES + ['nobody@example.test'])
    s = socket.create_connection(('127.0.0.1', API_PORT), 30)
    s.sendall(f'GET {mb(box)}/wait?timeout=25 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n'.encode())
    time.sleep(rnd.random() * 3)
    s.close()
    bump('wait_abandoned')


def long_poll_full():
    box = rnd.choice(MAILBOXES)
    st, d = req('GET', mb(box) + '/wait?timeout=5', ADMIN)
    bump('waits')
    if st not in (200, 204):
        err(f'wait {st} {d[:200]!r}')


def delete_one():
    box = rnd.choice(MAILBOXES)
    st, d = req('GET', mb(box) + '/messages?limit=50', ADMIN)
    items = json.loads(d)['items']
    if not items:
        return
    mid = rnd.choice(items)['id']
    st, d = req('DELETE', mb(box) + f'/messages/{mid}', ADMIN)
    if st == 204:
        with lock:
            deleted.add(mid)
        bump('del1')
    elif st != 404:
        err(f'DELETE {st} {d!r}')


def delete_all():
    st, d = req('GET', mb(PURGE) + '/messages?limit=1000', ADMIN)
    listed = [i['id'] for i in json.loads(d)['items']]
    total = 0
    while True:
        st, d = req('DELETE', mb(PURGE) + '/messages', ADMIN)
        if st != 200:
            err(f'DELETE all {st} {d!r}'); return
        j = json.loads(d)
        total += j['deleted']
        if not j['more']:
            break
    with lock:
        deleted.update(listed)
    bump('delall')


pop_lock = threading.Lock()


def pop3_session():
    with pop_lock:
        pop3_session_()


def pop3_session_():
    tok = POP_TOKEN
    p = poplib.POP3('127.0.0.1', POP3_PORT, timeout=60)
    p.user(POPBOX); p.pass_(tok)
    n, size = p.stat()
    resp, lines, _ = p.list()
    total = sum(int(l.split()[1]) for l in lines)
    if len(lines) != n or total != size:
        err(f'POP3 STAT {n} {size} vs LIST {len(lines)} {total}')
    uidl = {int(l.split()[0]): l.split()[1].decode() for l in p.uidl()[1]}
    picks = rnd.sample(sorted(uidl), min(3, len(uidl)))
    for k in picks:
        resp, lines, octets = p.retr(k)
        raw = b'\r\n'.join(lines) + b'\r\n'
        with lock:
            info = sent.get(uidl[k])
        if info and hashlib.sha256(raw[len(raw) - info[2]:]).hexdigest() != info[1]:
            err(f'POP3 RETR {uidl[k]} differs from what was sent')
    drop = rnd.random() < 0.4
    to_del = picks[:1] if picks and rnd.random() < 0.6 else []
    for k in to_del:
        p.dele(k)
    if drop:
        p.sock.close()  # no QUIT: nothing is deleted
        bump('pop_drop')
    else:
        p.quit()
        with lock:
            for k in to_del:
                deleted.add(uidl[k])
        bump('pop_dele', len(to_del))
        bump('pop_quit')


def mpop_session():
    d = os.path.join(WORK, 'mpop'); os.makedirs(d, exist_ok=True)
    rc = os.path.join(d, 'mpoprc')
    with open(rc, 'w') as f:
        f.write(f'account local\nhost 127.0.0.1\nport {POP3_PORT}\ntls off\nauth user\nuser {POPBOX}\n'
                f'password {POP_TOKEN}\ndelivery mbox {d}/inbox.mbox\nkeep on\nuidls_file {d}/uidls\n')
    os.chmod(rc, 0o600)
    open(os.path.join(d, 'inbox.mbox'), 'a').close()
    with pop_lock:
        r = subprocess.run(['mpop', '-C', rc, 'local'], capture_output=True, timeout=120)
    if r.returncode != 0:
        err(f'mpop {r.returncode} {r.stderr[:300]!r}')
    bump('mpop')
    # keep the mbox from growing without bound
    open(os.path.join(d, 'inbox.mbox'), 'w').close()
    try:
        os.unlink(os.path.join(d, 'uidls'))
    except FileNotFoundError:
        pass


def tokens():
    r = cli('token', 'create', rnd.choice(MAILBOXES), '--label', 'soak')
    tok = r.stdout.decode().strip()
    if not tok.startswith('mr_'):
        err(f'token create {r.stderr!r}'); return
    bump('tok_create')
    st, _ = req('GET', '/v1/me', tok)
    if st != 200:
        err(f'/v1/me new token {st}')
    r = cli('token', 'revoke', tok)
    if r.returncode != 0:
        err(f'revoke {r.stderr!r}'); return
    bump('tok_revoke')
    st, _ = req('GET', '/v1/me', tok)
    if st != 401:
        err(f'revoked token still works: {st}')


def cfg_edit():
    cfg = json.load(open(CFG))
    cfg['maxMessageBytes'] = rnd.choice([41943040, 40000000])
    with open(CFG + '.new', 'w') as f:
        json.dump(cfg, f)
    os.replace(CFG + '.new', CFG)
    bump('cfg_edit')


def import_old():
    """Mail dated years ago, imported: the retention sweep (mailboxDays 1) deletes it at the next start."""
    d = os.path.join(WORK, 'old'); os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f'old-{time.time_ns()}.eml')
    with open(path, 'wb') as f:
        f.write(b'Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: o@soak.test\r\nTo: old@example.test\r\n'
                b'Subject: old %d\r\n\r\nold mail\r\n' % time.time_ns())
    r = cli('import', '--to', 'old@example.test', path)
    if r.returncode != 0:
        err(f'import {r.returncode} {r.stderr!r}')
    bump('import_old')


# ---------------------------------------------------------------- sampling
def dir_size(p):
    t = 0
    for r, _, fs in os.walk(p):
        for f in fs:
            try:
                t += os.lstat(os.path.join(r, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return t


def count_files(p, pred=lambda n: True):
    n = 0
    for r, _, fs in os.walk(p):
        n += sum(1 for f in fs if pred(f))
    return n


def proc_sample(pid):
    try:
        st = open(f'/proc/{pid}/status').read()
        rss = int(re.search(r'VmRSS:\s+(\d+)', st).group(1)) // 1024
        fds = os.listdir(f'/proc/{pid}/fd')
        socks = files = 0
        for fd in fds:
            try:
                l = os.readlink(f'/proc/{pid}/fd/{fd}')
            except OSError:
                continue
            if l.startswith('socket:'):
                socks += 1
            elif l.startswith('/'):
                files += 1
        return rss, len(fds), socks, files
    except Exception:
        return None


samples = []


def sample(dev, pop):
    fsz = lambda n: os.path.getsize(os.path.join(DATA, n)) if os.path.exists(os.path.join(DATA, n)) else 0
    s = {
        't': round(time.time() - T0),
        'dev': proc_sample(dev.pid), 'pop3': proc_sample(pop.pid),
        'data_MB': round(dir_size(DATA) / 1e6, 1),
        'index_wal_KB': fsz('index.sqlite-wal') // 1024, 'blobs_wal_KB': fsz('blobs.sqlite-wal') // 1024,
        'index_MB': round(fsz('index.sqlite') / 1e6, 1), 'blobs_MB': round(fsz('blobs.sqlite') / 1e6, 1),
        'journal_KB': dir_size(os.path.join(DATA, 'journal')) // 1024,
        'spool_files': count_files(os.path.join(DATA, 'spool')),
        'tmp_files': count_files(DATA, lambda n: n.startswith('.~mr-tmp.')),
        'devlog_KB': os.path.getsize(os.path.join(WORK, 'dev.log')) // 1024,
        'sent': len(sent), 'deleted': len(deleted),
    }
    samples.append(s)
    say('SAMPLE', json.dumps(s))


# ---------------------------------------------------------------- end checks
def verify(phase):
    say('VERIFY', phase)
    bad = 0
    with lock:
        items = list(sent.items()); dels = set(deleted)
    for mid, (box, sha, n) in items:
        st, d = req('GET', mb(box) + f'/messages/{mid}/raw', ADMIN)
        if mid in dels:
            if st != 404:
                err(f'{phase}: deleted {mid} in {box} answers {st}'); bad += 1
            continue
        if st == 404 and box == PURGE:
            continue  # emptied with DELETE all after our listing: fine
        if st != 200:
            err(f'{phase}: {mid} in {box}: {st} {d[:200]!r}'); bad += 1; continue
        # stored = trace headers + what we sent
        if hashlib.sha256(d[len(d) - n:]).hexdigest() != sha:
            err(f'{phase}: {mid} in {box}: bytes differ (stored {len(d)}, sent {n})'); bad += 1
    # STAT vs LIST for every mailbox
    for box in MAILBOXES + [PURGE, POPBOX, 'old@example.test']:
        st, d = req('GET', mb(box), ADMIN)
        stat = json.loads(d)
        ids, total, crlf, cursor = [], 0, 0, None
        while True:
            st, d = req('GET', mb(box) + '/messages?limit=1000' + (f'&cursor={cursor}' if cursor else ''), ADMIN)
            j = json.loads(d)
            ids += [i['id'] for i in j['items']]; total += sum(i['size'] for i in j['items'])
            cursor = j['nextCursor']
            if not cursor:
                break
        if stat['messages'] != len(ids) or stat['bytes'] != total:
            err(f'{phase}: {box} STAT {stat} vs LIST {len(ids)} {total}'); bad += 1
        if len(set(ids)) != len(ids):
            err(f'{phase}: {box} LIST has duplicates'); bad += 1
        back = set(ids) & dels
        if back:
            err(f'{phase}: {box} deleted messages came back: {sorted(back)[:5]}'); bad += 1
    # POP3 STAT vs LIST
    p = poplib.POP3('127.0.0.1', POP3_PORT, timeout=60)
    p.user(POPBOX); p.pass_(POP_TOKEN)
    n, size = p.stat()
    lines = p.list()[1]
    if n != len(lines) or size != sum(int(l.split()[1]) for l in lines):
        err(f'{phase}: POP3 STAT {n} {size} vs LIST'); bad += 1
    p.quit()
    say('VERIFY', phase, 'checked', len(items), 'messages,', bad, 'problems')
    return bad


def stop_dev(dev):
    t = time.time()
    dev.send_signal(signal.SIGTERM)
    try:
        dev.wait(30)
    except subprocess.TimeoutExpired:
        err('dev did not stop within 30 s of SIGTERM'); dev.kill(); dev.wait()
    dt = time.time() - t
    say(f'dev stopped in {dt:.2f}s, exit {dev.returncode}')
    if dt > 5 or dev.returncode != 0:
        err(f'dev stop took {dt:.1f}s exit {dev.returncode}')


# ---------------------------------------------------------------- main
import atexit
procs = []
atexit.register(lambda: [p.kill() for p in procs if p.poll() is None])
os.makedirs(WORK, exist_ok=True)
with open(CFG, 'w') as f:
    json.dump({'domains': ['example.test'], 'mailboxes': ['*@example.test'],
               'retention': {'inboundDays': 1, 'mailboxDays': 1}}, f)
subprocess.run(['node', 'scripts/build-local.mjs'], cwd=ROOT, check=True)
dev = start_dev()
pop = start_pop3()
ADMIN = cli('token', 'create', '--admin', '--label', 'soak').stdout.decode().strip()
POP_TOKEN = cli('token', 'create', POPBOX).stdout.decode().strip()
assert ADMIN.startswith('mr_') and POP_TOKEN.startswith('mr_'), (ADMIN, POP_TOKEN)
T0 = time.time()
say('dev pid', dev.pid, 'pop3 pid', pop.pid, 'ports', SMTP_PORT, API_PORT, POP3_PORT)
sample(dev, pop)

u = lambda a, b: (lambda: rnd.uniform(a, b))
threads = [
    loop(smtp_single, u(0.2, 0.8)),
    loop(smtp_pipelined, u(2, 5)),
    loop(smtp_big, u(20, 40)),
    loop(smtp_drop_mid_data, u(5, 12)),
    loop(api_reader, u(0.5, 1.5)),
    loop(long_poll_abandon, u(0.5, 2)),
    loop(long_poll_full, u(1, 3)),
    loop(delete_one, u(2, 5)),
    loop(delete_all, u(30, 60)),
    loop(pop3_session, u(2, 5)),
    loop(mpop_session, u(30, 60)),
    loop(tokens, u(45, 75)),
    loop(cfg_edit, u(60, 120)),
    loop(import_old, u(60, 120)),
]
next_sample = time.time() + 30
while time.time() - T0 < DURATION:
    time.sleep(1)
    if HEAPSNAP and time.time() - T0 >= HEAPSNAP[0]:
        HEAPSNAP.pop(0); dev.send_signal(signal.SIGUSR2); say('heap snapshot requested')
    if time.time() >= next_sample:
        sample(dev, pop); next_sample += 30
        say('COUNTS', json.dumps(counts))
stop.set()
say('stopping workers')
for t in threads:
    t.join(180)
time.sleep(3)
sample(dev, pop)
verify('live')
stop_dev(dev)
pop.send_signal(signal.SIGTERM); pop.wait(30)
say('journal after stop:', os.listdir(os.path.join(DATA, 'journal')) if os.path.exists(os.path.join(DATA, 'journal')) else None)
say('spool after stop:', os.listdir(os.path.join(DATA, 'spool')) if os.path.exists(os.path.join(DATA, 'spool')) else None)
before = dir_size(DATA)
say('data dir before compact MB', round(before / 1e6, 1), sorted((f, os.path.getsize(os.path.join(DATA, f))) for f in os.listdir(DATA) if os.path.isfile(os.path.join(DATA, f))))
r = cli('compact')
say('compact', r.returncode, r.stdout.decode()[-500:], r.stderr.decode()[-500:])
after = dir_size(DATA)
say('data dir after compact MB', round(after / 1e6, 1), sorted((f, os.path.getsize(os.path.join(DATA, f))) for f in os.listdir(DATA) if os.path.isfile(os.path.join(DATA, f))))
dev = start_dev(); pop = start_pop3()
time.sleep(2)
sample(dev, pop)
st, d = req('GET', mb('old@example.test'), ADMIN)
say('old@ after restart (retention sweep at start):', d)
if json.loads(d)['messages'] != 0:
    err('old mail survived the retention sweep at start')
verify('restarted')
stop_dev(dev)
pop.send_signal(signal.SIGTERM); pop.wait(30)
say('COUNTS', json.dumps(counts))
say('ERRORS', len(errors))
for e in errors[:50]:
    say('  ', e)
json.dump({'samples': samples, 'counts': counts, 'errors': errors}, open(os.path.join(WORK, 'result.json'), 'w'))
sys.exit(1 if errors else 0)
