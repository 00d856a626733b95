// @ts-nocheck
/**
 * The web inbox (docs/adr/0017-web-inbox.md): a client of the mailbox API on its own origin, with
 * no framework and no build step. It signs in with a token (kept in sessionStorage, or localStorage
 * when asked to remember it), lists the mailboxes the token reads, their messages (search, unread
 * only, paging), shows a message (its HTML in a sandboxed frame that runs no script and loads
 * nothing remote but, when asked, its images), downloads attachments and the raw message, marks
 * read and unread, deletes, composes and replies, and shows new mail as it is stored (the long-poll).
 *
 * Everything a message carries reaches the page as text (`textContent`, attributes of our own
 * elements), never as HTML of the page: the only HTML from a message is the srcdoc of the frame.
 */

const TOKEN_KEY = 'mail-relay.token';
const PAGE_SIZE = 50;
/** Inline images (cid:) up to this size are shown; larger ones stay attachments to download. */
const MAX_INLINE_IMAGE_BYTES = 5 * 1024 * 1024;
/** "View source" shows up to this many bytes; larger messages are downloaded instead. */
const MAX_SOURCE_BYTES = 2 * 1024 * 1024;

// ---- small helpers --------------------------------------------------------------------------

/** An element with attributes (`on…` become listeners) and children (strings become text). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'value') el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function formatDate(iso, long = false) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  if (long) return d.toLocaleString();
  const today = new Date();
  return d.toDateString() === today.toDateString()
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' });
}

/**
 * Text from a message's headers without the Unicode controls that reorder what follows them
 * (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI): with them a sender's name could show its address
 * backwards, and "invoice\u202Egpj.exe" would read as the picture "invoiceexe.jpg". Right-to-left
 * scripts need none of them to show right.
 */
function plain(text) {
  return String(text ?? '').replace(/[\u202a-\u202e\u2066-\u2069]/g, '');
}

// RFC 3492 (Punycode), for the `xn--` labels of internationalized domain names.
const PUNY_BASE = 36;
const PUNY_T_MIN = 1;
const PUNY_T_MAX = 26;

function punyAdapt(delta, points, first) {
  let d = first ? Math.floor(delta / 700) : delta >> 1;
  d += Math.floor(d / points);
  let k = 0;
  for (; d > ((PUNY_BASE - PUNY_T_MIN) * PUNY_T_MAX) >> 1; k += PUNY_BASE) {
    d = Math.floor(d / (PUNY_BASE - PUNY_T_MIN));
  }
  return k + Math.floor(((PUNY_BASE - PUNY_T_MIN + 1) * d) / (d + 38));
}

function punyThreshold(k, bias) {
  return k <= bias ? PUNY_T_MIN : k >= bias + PUNY_T_MAX ? PUNY_T_MAX : k - bias;
}

/** The Unicode of an `xn--` label's Punycode (the part after `xn--`), or null when it is not valid Punycode. */
function punycodeToUnicode(input) {
  const digitOf = (c) =>
    c >= 0x30 && c <= 0x39
      ? c - 22
      : c >= 0x41 && c <= 0x5a
        ? c - 0x41
        : c >= 0x61 && c <= 0x7a
          ? c - 0x61
          : PUNY_BASE;
  const basic = Math.max(input.lastIndexOf('-'), 0);
  const out = [];
  for (let j = 0; j < basic; j++) out.push(input.charCodeAt(j));
  let n = 128;
  let i = 0;
  let bias = 72;
  for (let at = basic > 0 ? basic + 1 : 0; at < input.length; ) {
    const before = i;
    for (let w = 1, k = PUNY_BASE; ; k += PUNY_BASE) {
      if (at >= input.length) return null;
      const digit = digitOf(input.charCodeAt(at++));
      if (digit >= PUNY_BASE) return null;
      i += digit * w;
      const t = punyThreshold(k, bias);
      if (digit < t) break;
      w *= PUNY_BASE - t;
      if (i > 0x10ffff * (out.length + 1)) return null;
    }
    bias = punyAdapt(i - before, out.length + 1, before === 0);
    n += Math.floor(i / (out.length + 1));
    i %= out.length + 1;
    if (n > 0x10ffff) return null;
    out.splice(i++, 0, n);
  }
  return String.fromCodePoint(...out);
}

/** A Unicode label's `xn--` form, by the browser's own IDNA (the URL parser); the label itself if it has none. */
function asciiLabel(label) {
  try {
    return new URL(`http://${label}.invalid/`).hostname.split('.')[0] || label;
  } catch {
    return label;
  }
}

/** Scripts a domain label may mix with Latin and each other and still be shown in Unicode (Japanese writes them together). */
const MIXES_WITH_LATIN = /^(Han|Hiragana|Katakana|Hangul|Bopomofo)$/;
const SCRIPT_RES = [
  'Latin',
  'Cyrillic',
  'Greek',
  'Armenian',
  'Hebrew',
  'Arabic',
  'Devanagari',
  'Thai',
  'Georgian',
  'Han',
  'Hiragana',
  'Katakana',
  'Hangul',
  'Bopomofo',
].map((name) => [name, new RegExp(`\\p{Script=${name}}`, 'u')]);

/** Whether a label's letters come from scripts that look alike together (a Cyrillic `а` among Latin). */
function mixesScripts(label) {
  const scripts = new Set();
  for (const ch of label) {
    if (!/\p{L}/u.test(ch)) continue;
    const found = SCRIPT_RES.find(([, re]) => re.test(ch));
    if (found === undefined) return true;
    scripts.add(found[0]);
  }
  return scripts.size > 1 && ![...scripts].every((s) => s === 'Latin' || MIXES_WITH_LATIN.test(s));
}

/**
 * A domain as a person reads it: each `xn--` label in the Unicode it stands for (`münchen.de` for
 * `xn--mnchen-3ya.de`). A label that mixes scripts that look alike (a Cyrillic `а` in `pаypal`) is
 * shown in its `xn--` form instead, also when it comes in Unicode (the parser gives a message's
 * addresses in Unicode), as browsers show such names in the address bar; so is one that is not
 * valid Punycode. For display only: URLs and API calls keep the address as the API gave it.
 */
function displayDomain(domain) {
  return domain
    .split('.')
    .map((label) => {
      const ace = /^xn--/i.test(label);
      const unicode = ace ? punycodeToUnicode(label.slice(4).toLowerCase()) : label;
      if (unicode === null || unicode === '' || /[\p{C}\s@]/u.test(unicode)) return label;
      if (!mixesScripts(unicode)) return unicode;
      return ace ? label : asciiLabel(label);
    })
    .join('.');
}

/** An address as a person reads it: its domain by `displayDomain`. */
function displayAddress(address) {
  const at = String(address ?? '').lastIndexOf('@');
  if (at < 0) return String(address ?? '');
  return address.slice(0, at + 1) + displayDomain(address.slice(at + 1));
}

/** Text holding addresses (a list entry's `Name <a@xn--…>, b@…`) with their domains as `displayDomain` shows them. */
function displayAddresses(text) {
  return String(text ?? '').replace(/@([^\s<>()[\]@,;:"]+)/gu, (_, domain) => `@${displayDomain(domain)}`);
}

function formatAddress(a) {
  const address = displayAddress(a.address);
  return plain(a.name ? `${a.name} <${address}>` : address);
}

function splitAddresses(text) {
  return text
    .split(/[,;\n]/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * A message's bytes as text: UTF-8 when they are; otherwise in the first charset the message names
 * (other than UTF-8 and ASCII) that the browser knows, else windows-1252, so that no byte of 8-bit
 * mail in a legacy charset turns into U+FFFD.
 */
function decodeSource(buffer) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buffer);
  } catch {
    const latin1 = new TextDecoder('windows-1252').decode(buffer);
    for (const [, label] of latin1.matchAll(/\bcharset\s*=\s*"?([\w.:-]+)/gi)) {
      if (/^(?:utf-?8|us-ascii|ascii)$/i.test(label)) continue;
      try {
        return new TextDecoder(label).decode(buffer);
      } catch {
        // Not a charset this browser knows: try the next one named.
      }
    }
    return latin1;
  }
}

// ---- the API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const session = {
  token: null,
  load() {
    this.token = sessionStorage.getItem(TOKEN_KEY) ?? localStorage.getItem(TOKEN_KEY);
    return this.token;
  },
  /**
   * `remember`: true keeps the token on this device, false forgets one kept there (the sign-in form's
   * box); undefined leaves what is kept alone (a `#token=` link, a reload): a link in a message must
   * not replace or erase the token its reader chose to keep.
   */
  save(token, remember) {
    this.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    if (remember === true) localStorage.setItem(TOKEN_KEY, token);
    else if (remember === false) localStorage.removeItem(TOKEN_KEY);
  },
  clear() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
  },
};

/** A request to `/v1…`; answers other than 2xx/304 throw ApiError with the API's code and message. */
async function api(path, { method = 'GET', query, body, headers = {}, signal, token } = {}) {
  const url = new URL(`/v1${path}`, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  const init = {
    method,
    headers: { Authorization: `Bearer ${token ?? session.token}`, ...headers },
    cache: 'no-store',
    signal,
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(url, init);
  if (res.ok || res.status === 304) return res;
  let code = `http_${res.status}`;
  let message = `${res.status} ${res.statusText}`;
  try {
    const err = (await res.json()).error;
    if (err?.code) code = err.code;
    if (err?.message) message = err.message;
  } catch {
    // Not our JSON (a gateway's error page): the status says it.
  }
  if (res.status === 401 && token === undefined) {
    signOut('The token is no longer valid (revoked?). Sign in again.');
  }
  throw new ApiError(res.status, code, message);
}

const enc = encodeURIComponent;
const mailboxPath = (address) => `/mailboxes/${enc(address)}`;

async function getJson(path, options) {
  return (await api(path, options)).json();
}

/** Saves a response's body as a file, named `filename`. */
async function saveAs(res, filename) {
  const url = URL.createObjectURL(await res.blob());
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// ---- state -----------------------------------------------------------------------------------

const state = {
  me: null,
  mailboxes: [],
  mailboxCursor: null,
  address: null,
  view: 'inbox',
  q: '',
  unseen: false,
  items: [],
  nextCursor: null,
  /** Ids ticked in the list, for "Delete selected"; emptied whenever the list is loaded anew. */
  checked: new Set(),
  selected: null,
  /** The id of the message last asked for (`openMessage`), shown or on its way, until it is closed. */
  opening: null,
  /** Bumped on every change of mailbox, view or filter: stale answers and long-polls stop. */
  generation: 0,
  watcher: null,
  newWhileFiltered: 0,
};

const app = document.getElementById('app');

/** A notice stays at least this long, longer by its length: time to read it (about 15 characters a second). */
const NOTICE_MIN_MS = 6000;
const NOTICE_MS_PER_CHAR = 70;
/** A notice the pointer or the focus just left stays this long at least, however little of its time was left. */
const NOTICE_RESUME_MS = 2000;

/**
 * A toast: a live region (`role`) for its text, which is in the page from its start and empty until
 * something is said (a screen reader announces a change of a live region it already knows, not one
 * inserted with its text), and a close button beside it, outside the region (its name is not
 * announced with the text). An error stays until dismissed; a notice goes after a time by its
 * length, which stops while the pointer is on it or the focus in it.
 */
function makeToast(kind, role) {
  const text = h('p', { id: kind === 'error' ? 'alert' : 'status', class: 'toast-text', role });
  const close = h(
    'button',
    {
      class: 'toast-close',
      hidden: true,
      'aria-label': kind === 'error' ? 'Dismiss the error' : 'Dismiss the notice',
      title: 'Dismiss (Esc)',
      onclick: () => t.dismiss(),
    },
    '×',
  );
  const box = h('div', { class: `toast ${kind}` }, text, close);
  const t = {
    box,
    timer: undefined,
    /** When the running timer was set, and how much of the notice's time was left then. */
    since: 0,
    left: 0,
    holds: new Set(),
    /** Where the focus was before it came to the close button, to go back to when the toast goes. */
    cameFrom: null,
    show(message) {
      text.textContent = message;
      box.classList.add('shown');
      close.hidden = false;
      clearTimeout(this.timer);
      this.timer = undefined;
      if (kind === 'error') return;
      this.left = Math.max(NOTICE_MIN_MS, message.length * NOTICE_MS_PER_CHAR);
      if (this.holds.size === 0) this.run();
    },
    run() {
      this.since = Date.now();
      this.timer = setTimeout(() => this.dismiss(), this.left);
    },
    hold(why) {
      this.holds.add(why);
      if (this.timer === undefined) return;
      clearTimeout(this.timer);
      this.timer = undefined;
      this.left -= Date.now() - this.since;
    },
    release(why) {
      this.holds.delete(why);
      if (kind === 'error' || !this.shown() || this.holds.size > 0 || this.timer !== undefined) return;
      this.left = Math.max(this.left, NOTICE_RESUME_MS);
      this.run();
    },
    shown() {
      return box.classList.contains('shown');
    },
    dismiss() {
      clearTimeout(this.timer);
      this.timer = undefined;
      const hadFocus = box.contains(document.activeElement);
      text.textContent = '';
      box.classList.remove('shown');
      close.hidden = true;
      // Hidden, the close button loses the focus: it goes back to where it came from.
      if (hadFocus) (this.cameFrom?.isConnected ? this.cameFrom : els.title)?.focus();
      this.cameFrom = null;
    },
  };
  box.addEventListener('pointerenter', () => t.hold('pointer'));
  box.addEventListener('pointerleave', () => t.release('pointer'));
  box.addEventListener('focusin', (event) => {
    if (!box.contains(event.relatedTarget) && event.relatedTarget !== null) t.cameFrom = event.relatedTarget;
    t.hold('focus');
  });
  box.addEventListener('focusout', (event) => {
    if (!box.contains(event.relatedTarget)) t.release('focus');
  });
  return t;
}

const toasts = { status: makeToast('info', 'status'), alert: makeToast('error', 'alert') };

/** The live region for screen readers only (new mail, which the list shows by itself). */
const announcer = h('div', { id: 'announce', class: 'sr-only', role: 'status' });
document.body.append(h('div', { class: 'toasts' }, toasts.alert.box, toasts.status.box), announcer);

// Escape dismisses the toasts, unless it is for something else: a dialog (compose), or a field it clears.
document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || event.defaultPrevented) return;
  if (document.querySelector('dialog[open]') !== null) return;
  const target = event.target;
  if ((target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) && target.value !== '')
    return;
  const shown = [toasts.alert, toasts.status].filter((t) => t.shown());
  if (shown.length === 0) return;
  for (const t of shown) t.dismiss();
  event.preventDefault();
});

/** Shows `text` in a toast: an error stays until dismissed, a notice for a time by its length. */
function toast(text, kind = 'info') {
  (kind === 'error' ? toasts.alert : toasts.status).show(text);
}

/** Says `text` to screen readers only. */
function announce(text) {
  announcer.textContent = text;
}

/** Whether the keyboard focus was lost (its element taken out of the page, hidden or disabled). */
function focusLost() {
  return document.activeElement === null || document.activeElement === document.body;
}

/**
 * Runs `render`, which replaces elements of `container`: the element that had the focus in it (by
 * its `data-key`) has it again after, so that new mail or a counter does not throw a keyboard user
 * back to the top of the page.
 */
function keepingFocus(container, render) {
  const active = document.activeElement;
  const key = active !== null && container.contains(active) ? active.dataset?.key : undefined;
  render();
  if (key !== undefined && !container.contains(document.activeElement)) {
    container.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
  }
}

function reportError(err) {
  if (err?.name === 'AbortError') return;
  console.error(err);
  if (err instanceof ApiError && err.status === 401) return;
  toast(err instanceof ApiError ? `${err.message} (${err.code})` : String(err?.message ?? err), 'error');
}

// ---- sign-in ----------------------------------------------------------------------------------

function signOut(reason) {
  session.clear();
  stopWatching();
  Object.assign(state, { me: null, mailboxes: [], mailboxCursor: null, address: null, view: 'inbox' });
  Object.assign(state, { q: '', unseen: false, items: [], nextCursor: null, selected: null, opening: null });
  state.generation++;
  history.replaceState(null, '', location.pathname);
  renderSignIn(reason);
}

function renderSignIn(message) {
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'mr_…',
    required: true,
  });
  const remember = h('input', { id: 'remember', type: 'checkbox' });
  const error = h('p', { class: 'error', role: 'alert' }, message ?? '');
  const form = h(
    'form',
    {
      class: 'signin',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        try {
          await signIn(input.value.trim(), remember.checked);
        } catch (err) {
          error.textContent =
            err instanceof ApiError && err.status === 401
              ? 'That token is not valid.'
              : `Could not sign in: ${err.message}`;
        }
      },
    },
    h('h1', {}, 'mail-relay'),
    h('label', { for: 'token' }, 'Token'),
    input,
    h('label', { class: 'check' }, remember, ' Remember me on this device'),
    h('button', { type: 'submit' }, 'Sign in'),
    error,
    h(
      'p',
      { class: 'hint' },
      'A mailbox token reads its mailbox; an admin token reads them all. Create one with ',
      h('code', {}, 'npx mail-relay token create <address>'),
      ' (for a deployed stack, add ',
      h('code', {}, '--stack <name>'),
      ').',
    ),
  );
  app.replaceChildren(h('main', { class: 'signin-page' }, form));
  input.focus();
}

async function signIn(token, remember) {
  const me = await getJson('/me', { token });
  session.save(token, remember);
  state.me = me;
  await startInbox();
}

// ---- the inbox ---------------------------------------------------------------------------------

const els = {};

function renderShell() {
  els.mailboxes = h('nav', { class: 'mailboxes', 'aria-label': 'Mailboxes' });
  els.search = h('input', {
    type: 'search',
    placeholder: 'Search from, to, subject',
    'aria-label': 'Search',
    onchange: () => {
      state.q = els.search.value.trim();
      loadList();
    },
  });
  els.unseen = h('input', {
    type: 'checkbox',
    onchange: () => {
      state.unseen = els.unseen.checked;
      loadList();
    },
  });
  els.checkAll = h('input', {
    type: 'checkbox',
    'aria-label': 'Select every message shown',
    title: 'Select every message shown',
    onchange: () => {
      state.checked = new Set(els.checkAll.checked ? state.items.map((i) => i.id) : []);
      renderList();
    },
  });
  els.deleteChecked = h('button', {
    class: 'danger delete-checked',
    hidden: true,
    onclick: (event) => deleteChecked(event.currentTarget),
  });
  els.notice = h('button', {
    class: 'notice',
    hidden: true,
    onclick: () => {
      // The button hides itself: the focus goes to the list it reloads.
      els.title.focus();
      loadList();
    },
  });
  // A grid (the WAI-ARIA pattern; docs/adr/0017-web-inbox.md): one tab stop, arrow keys within. The
  // list and its items are `ul`/`li` for the page's structure; the roles are on the grid, its rows
  // and cells (a `ul` cannot be a grid, nor an `li` a row).
  els.list = h('ul', {
    class: 'messages',
    role: 'none',
    onkeydown: onListKey,
    onfocusin: (event) => {
      const li = event.target.closest('li.message');
      if (li !== null) setRover(li.dataset.id, event.target.matches('input.pick') ? 'pick' : 'open');
    },
  });
  els.grid = h('div', { class: 'grid', role: 'grid', 'aria-label': 'Messages' }, els.list);
  els.more = h('button', { class: 'more', hidden: true, onclick: () => loadMore() }, 'Load more');
  // Focused (tabindex -1) when the focus has nowhere better to go: after sign-in, a delete.
  els.title = h('h2', { class: 'list-title', tabindex: -1 });
  els.reader = h('section', { class: 'reader', 'aria-label': 'Message' });
  const who = state.me.admin ? 'admin' : displayAddress(state.me.mailbox);
  els.layout = h(
    'main',
    { class: 'layout' },
    els.mailboxes,
    h(
      'section',
      { class: 'list' },
      els.title,
      h(
        'div',
        { class: 'toolbar' },
        els.checkAll,
        els.search,
        h('label', { class: 'check' }, els.unseen, ' Unread'),
        h('button', { class: 'secondary', title: 'Reload the list', onclick: () => loadList() }, 'Refresh'),
        h('button', { class: 'danger', onclick: (event) => deleteAll(event.currentTarget) }, 'Delete all'),
        els.deleteChecked,
      ),
      els.notice,
      els.grid,
      els.more,
    ),
    els.reader,
  );
  app.replaceChildren(
    h(
      'header',
      { class: 'top' },
      h('h1', {}, 'mail-relay'),
      h('span', { class: 'sr-only' }, 'Signed in as'),
      h('span', { class: 'who' }, who),
      h('button', { onclick: () => openCompose() }, 'Compose'),
      h('button', { class: 'secondary', onclick: () => signOut() }, 'Sign out'),
    ),
    els.layout,
  );
}

async function startInbox() {
  renderShell();
  if (state.me.admin) await loadMailboxes(false);
  else state.mailboxes = [{ address: state.me.mailbox }];
  renderMailboxes();
  await followHash();
  // The sign-in form is gone: the focus starts at the list (its heading says which one).
  if (focusLost()) els.title.focus();
}

/** `#/<address>/<view>[/<id>]`: the place in the inbox, so that reload and back keep it. */
function parseHash() {
  const decode = (s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return '';
    }
  };
  const [address, view, id] = location.hash.replace(/^#\/?/, '').split('/').map(decode);
  return { address: address || null, view: view === 'sent' ? 'sent' : 'inbox', id: id || null };
}

async function followHash() {
  let { address, view, id } = parseHash();
  if (address === null || (!state.me.admin && address !== state.me.mailbox)) {
    address = state.me.admin ? (state.mailboxes[0]?.address ?? null) : state.me.mailbox;
    if (address === null) {
      els.title.textContent = 'No mailboxes yet';
      return;
    }
    history.replaceState(null, '', `#/${enc(address)}/inbox`);
    view = 'inbox';
    id = null;
  }
  if (address !== state.address || view !== state.view) {
    state.address = address;
    state.view = view;
    closeMessage();
    renderMailboxes();
    await loadList();
  }
  if (id !== null && id !== state.opening) await openMessage(id);
  if (id === null && state.opening !== null) closeMessage();
}

async function loadMailboxes(more) {
  const page = await getJson('/mailboxes', {
    query: { limit: 100, cursor: more ? state.mailboxCursor : undefined },
  });
  state.mailboxes = more ? [...state.mailboxes, ...page.items] : page.items;
  state.mailboxCursor = page.nextCursor;
}

function renderMailboxes() {
  const entries = state.mailboxes.map((m) =>
    h(
      'div',
      { class: 'mailbox' },
      h('div', { class: 'address', title: m.address }, displayAddress(m.address)),
      ['inbox', 'sent'].map((view) => {
        const count = view === 'inbox' ? m.messages : m.sent?.messages;
        const current = m.address === state.address && view === state.view;
        return h(
          'a',
          {
            href: `#/${enc(m.address)}/${view}`,
            class: current ? 'view current' : 'view',
            'aria-current': current ? 'page' : undefined,
            'data-key': `view:${m.address}:${view}`,
          },
          view === 'inbox' ? 'Inbox' : 'Sent',
          // "Inbox of a@b, 3 messages" to a screen reader: an admin has one "Inbox" per mailbox.
          h('span', { class: 'sr-only' }, ` of ${displayAddress(m.address)}`),
          count === undefined
            ? ''
            : [h('span', { class: 'count' }, String(count)), h('span', { class: 'sr-only' }, ' messages')],
        );
      }),
    ),
  );
  const more =
    state.mailboxCursor === null || state.mailboxCursor === undefined
      ? null
      : h(
          'button',
          {
            class: 'more',
            'data-key': 'more-mailboxes',
            onclick: async () => {
              await loadMailboxes(true).catch(reportError);
              renderMailboxes();
            },
          },
          'More mailboxes',
        );
  keepingFocus(els.mailboxes, () => els.mailboxes.replaceChildren(...entries, more ?? ''));
}

/** Refreshes the counters of the mailbox on show (its STAT, both views). */
async function refreshCounts() {
  const address = state.address;
  const [inbox, sent] = await Promise.all([
    getJson(mailboxPath(address)),
    getJson(mailboxPath(address), { query: { view: 'sent' } }),
  ]);
  const entry = state.mailboxes.find((m) => m.address === address);
  if (entry !== undefined) {
    entry.messages = inbox.messages;
    entry.bytes = inbox.bytes;
    entry.sent = { messages: sent.messages, bytes: sent.bytes };
  }
  renderMailboxes();
}

function listQuery(cursor) {
  return {
    view: state.view,
    limit: PAGE_SIZE,
    cursor,
    q: state.q,
    unseen: state.unseen ? 'true' : undefined,
  };
}

/** Requests one "Load more" (or the first page) makes at most to fill a page of a search. */
const MAX_PAGE_REQUESTS = 10;

/**
 * A page of the list from `cursor`: in AWS a search (`q`, unseen only) answers after reading a
 * bounded part of the mailbox, with fewer items than asked (maybe none) and a cursor to read on
 * from, so this asks on until the page is full, the list ends, or MAX_PAGE_REQUESTS were made.
 */
async function listPage(cursor, generation) {
  const items = [];
  for (let requests = 0; ; requests++) {
    const page = await getJson(`${mailboxPath(state.address)}/messages`, { query: listQuery(cursor) });
    items.push(...page.items);
    cursor = page.nextCursor;
    if (cursor === null || items.length >= PAGE_SIZE || requests + 1 >= MAX_PAGE_REQUESTS) break;
    if (generation !== state.generation) break;
  }
  return { items, nextCursor: cursor };
}

async function loadList() {
  const generation = ++state.generation;
  stopWatching();
  state.newWhileFiltered = 0;
  state.checked = new Set();
  renderChecked();
  els.notice.hidden = true;
  els.title.textContent = `${displayAddress(state.address)} — ${state.view === 'sent' ? 'Sent' : 'Inbox'}`;
  rover.id = null;
  els.list.replaceChildren(emptyRow('Loading…'));
  try {
    // The long-poll's starting point is taken before the list is read: nothing stored in between is missed.
    const start = await api(`${mailboxPath(state.address)}/wait`, {
      query: { view: state.view, timeout: 0 },
    });
    const cursor = start.headers.get('Mail-Relay-Cursor');
    const page = await listPage(undefined, generation);
    if (generation !== state.generation) return;
    state.items = page.items;
    // Ticked while this loaded: boxes of the list before.
    state.checked = new Set();
    state.nextCursor = page.nextCursor;
    renderList();
    watch(generation, cursor);
    refreshCounts().catch(reportError);
  } catch (err) {
    if (generation === state.generation) els.list.replaceChildren(emptyRow(err.message));
    reportError(err);
  }
}

/** Whether a "Load more" is under way (a second click while it is asks for nothing). */
let loadingMore = false;

/** "Load more": the next page's entries go below the ones shown, which stay as they are. */
async function loadMore() {
  if (loadingMore) return;
  loadingMore = true;
  const generation = state.generation;
  try {
    const page = await listPage(state.nextCursor, generation);
    if (generation !== state.generation) return;
    const shown = new Set(state.items.map((i) => i.id));
    const added = page.items.filter((i) => !shown.has(i.id));
    state.items.push(...added);
    state.nextCursor = page.nextCursor;
    renderList();
    announce(`${added.length} more message${added.length === 1 ? '' : 's'}, ${state.items.length} in all`);
    // The button hid itself (the list's end): the focus goes to the first entry it brought.
    if (els.more.hidden && (document.activeElement === els.more || focusLost())) {
      focusList(added[0]?.id ?? null, state.items.length - 1);
    }
  } catch (err) {
    reportError(err);
  } finally {
    loadingMore = false;
  }
}

function renderList() {
  // Only what is on show stays ticked (a message deleted elsewhere, or by Delete all, is not).
  const shown = new Set(state.items.map((i) => i.id));
  for (const id of state.checked) if (!shown.has(id)) state.checked.delete(id);
  renderChecked();
  keepingFocus(els.list, () => {
    if (state.items.length === 0) {
      els.list.replaceChildren(
        emptyRow(
          !(state.q || state.unseen)
            ? 'No messages.'
            : state.nextCursor === null
              ? 'No messages match.'
              : 'No matches in the newest messages: “Load more” searches older ones.',
        ),
      );
    } else {
      updateRows();
    }
  });
  syncRover();
  els.more.hidden = state.nextCursor === null;
}

/**
 * Makes the list's entries those of `state.items`, keeping the element of each entry that is shown
 * already (only its box is set again): "Load more", new mail and a delete add or take away entries
 * and leave the others, with the focus, the scroll position and what is ticked, as they are.
 */
function updateRows() {
  const rows = new Map();
  for (const li of [...els.list.children]) {
    if (li.classList.contains('message')) rows.set(li.dataset.id, li);
    else li.remove();
  }
  const wanted = new Set(state.items.map((i) => i.id));
  for (const [id, li] of rows) {
    if (!wanted.has(id)) li.remove();
  }
  let next = els.list.firstElementChild;
  for (const item of state.items) {
    let li = rows.get(item.id);
    if (li === undefined) li = renderItem(item);
    else li.querySelector('input.pick').checked = state.checked.has(item.id);
    if (li === next) next = next.nextElementSibling;
    else els.list.insertBefore(li, next);
  }
}

/** An entry of the list that is no message ("Loading…", "No messages."): a row of one cell. */
function emptyRow(text) {
  return h(
    'li',
    { class: 'empty', role: 'none' },
    h('div', { role: 'row' }, h('div', { role: 'gridcell' }, text)),
  );
}

/** The toolbar's "Delete n selected" and select-all box, from `state.checked`. */
function renderChecked() {
  const n = state.checked.size;
  els.deleteChecked.hidden = n === 0;
  els.deleteChecked.textContent = `Delete ${n} selected`;
  els.checkAll.checked = n > 0 && n === state.items.length;
  els.checkAll.indeterminate = n > 0 && n < state.items.length;
}

function renderItem(item) {
  const selected = state.selected?.id === item.id;
  const who = plain(displayAddresses(state.view === 'sent' ? `To: ${item.to}` : item.from));
  // Both cells' controls are out of the tab order: the grid's one tab stop is set by `syncRover`.
  const pick = h('input', {
    type: 'checkbox',
    class: 'pick',
    tabindex: -1,
    'data-key': `pick:${item.id}`,
    'aria-label': `Select “${plain(item.subject) || '(no subject)'}”`,
    checked: state.checked.has(item.id),
    onchange: (event) => {
      if (event.currentTarget.checked) state.checked.add(item.id);
      else state.checked.delete(item.id);
      renderChecked();
    },
  });
  const open = h(
    'a',
    {
      href: `#/${enc(state.address)}/${state.view}/${item.id}`,
      tabindex: -1,
      'data-key': `open:${item.id}`,
      'aria-current': selected ? 'true' : undefined,
    },
    // Unread is bold and has a dot; a screen reader hears it first.
    item.seen ? null : h('span', { class: 'sr-only' }, 'Unread, '),
    h(
      'div',
      { class: 'line' },
      h('span', { class: 'from' }, who || '(no sender)'),
      h(
        'time',
        { datetime: item.receivedAt, title: formatDate(item.receivedAt, true) },
        formatDate(item.receivedAt),
      ),
    ),
    h(
      'div',
      { class: 'line' },
      h('span', { class: 'subject' }, plain(item.subject) || '(no subject)'),
      item.hasAttachments
        ? h(
            'span',
            { class: 'clip', title: 'Has attachments' },
            h('span', { 'aria-hidden': 'true' }, '📎'),
            h('span', { class: 'sr-only' }, ', has attachments, '),
          )
        : '',
      item.plusTag ? h('span', { class: 'tag' }, `+${plain(item.plusTag)}`) : '',
    ),
    h('div', { class: 'snippet' }, plain(item.snippet)),
  );
  return h(
    'li',
    {
      class: ['message', item.seen ? 'seen' : 'unseen', selected ? 'selected' : ''].join(' ').trim(),
      'data-id': item.id,
      role: 'none',
    },
    h(
      'div',
      { class: 'row', role: 'row' },
      h('div', { class: 'pick-cell', role: 'gridcell' }, pick),
      h('div', { class: 'open-cell', role: 'gridcell' }, open),
    ),
  );
}

function updateItem(updated) {
  const index = state.items.findIndex((i) => i.id === updated.id);
  if (index >= 0) state.items[index] = { ...state.items[index], ...updated };
  const li = els.list.querySelector(`li[data-id="${updated.id}"]`);
  if (li !== null && index >= 0) {
    keepingFocus(els.list, () => li.replaceWith(renderItem(state.items[index])));
    syncRover();
  }
}

// ---- the list by keyboard -------------------------------------------------------------------

/**
 * The list is a grid with a roving tabindex (https://www.w3.org/WAI/ARIA/apg/patterns/grid/): of
 * its controls only one is in the tab order, the one Tab comes back to: the one last focused, else
 * the message on show's, else the first message's. `cell` is which of the row's two: its box
 * (`pick`) or the message (`open`).
 */
const rover = { id: null, cell: 'open' };
/** The control that has `tabindex=0` now. */
let roverEl = null;

function setRover(id, cell) {
  rover.id = id;
  rover.cell = cell;
  syncRover();
}

function rowOf(id) {
  return id === null || id === undefined
    ? null
    : els.list.querySelector(`li.message[data-id="${CSS.escape(id)}"]`);
}

function cellControl(li, cell) {
  return li.querySelector(cell === 'pick' ? 'input.pick' : '.open-cell > a');
}

/** Gives `tabindex=0` to the rover's control (see `rover`), and -1 to the one that had it. */
function syncRover() {
  const mine = rowOf(rover.id);
  const li = mine ?? rowOf(state.selected?.id) ?? els.list.querySelector('li.message');
  const el = li === null ? null : cellControl(li, mine !== null ? rover.cell : 'open');
  if (roverEl !== null && roverEl !== el) roverEl.tabIndex = -1;
  if (el !== null) el.tabIndex = 0;
  roverEl = el;
}

/** Rows an arrow key, Page Up/Down, Home/End move by; Infinity: to the end. */
const ROW_KEYS = {
  ArrowDown: 1,
  ArrowUp: -1,
  PageDown: 10,
  PageUp: -10,
  End: Number.POSITIVE_INFINITY,
  Home: Number.NEGATIVE_INFINITY,
};

/**
 * The keys of the list (ADR 17): Up/Down a message, Page Up/Down ten, Home/End (also with Ctrl) the
 * first and the last; Left/Right between the row's box and its message; Enter opens the message,
 * Space ticks its box (on the box too, as a checkbox does), Delete (or Backspace) deletes it, asking
 * first as the reader's Delete does. Tab leaves the list: the browser's own.
 */
function onListKey(event) {
  if (event.altKey || event.metaKey || event.defaultPrevented) return;
  const li = event.target.closest('li.message');
  if (li === null) return;
  const cell = event.target.matches('input.pick') ? 'pick' : 'open';
  const item = state.items.find((i) => i.id === li.dataset.id);
  const by = ROW_KEYS[event.key];
  let to;
  if (by !== undefined && (!event.ctrlKey || !Number.isFinite(by))) {
    to = li;
    if (by === Number.POSITIVE_INFINITY) to = els.list.lastElementChild;
    else if (by === Number.NEGATIVE_INFINITY) to = els.list.firstElementChild;
    else {
      for (let n = Math.abs(by); n > 0; n--) {
        const next = by > 0 ? to.nextElementSibling : to.previousElementSibling;
        if (next === null) break;
        to = next;
      }
    }
  } else if (event.ctrlKey || event.shiftKey) {
    return;
  } else if (event.key === 'ArrowLeft' || event.key === 'ArrowRight') {
    focusCell(li, event.key === 'ArrowLeft' ? 'pick' : 'open');
  } else if (event.key === 'Enter') {
    if (cell === 'pick') cellControl(li, 'open').click();
    else return; // The link opens it.
  } else if (event.key === ' ') {
    if (cell === 'open') cellControl(li, 'pick').click();
    else return; // The box ticks itself.
  } else if (event.key === 'Delete' || event.key === 'Backspace') {
    if (item !== undefined) deleteMessage(item);
  } else {
    return;
  }
  event.preventDefault();
  if (to?.classList.contains('message')) focusCell(to, cell);
}

/** Focuses a row's box or message, scrolling the list only as far as it takes to show it. */
function focusCell(li, cell) {
  const el = cellControl(li, cell);
  el.focus({ preventScroll: true });
  el.scrollIntoView({ block: 'nearest' });
}

// ---- new mail ------------------------------------------------------------------------------

function stopWatching() {
  state.watcher?.abort();
  state.watcher = null;
}

/** Long-polls the mailbox on show from `cursor` until it changes; new messages go on top. */
async function watch(generation, cursor) {
  const aborter = new AbortController();
  state.watcher = aborter;
  let failures = 0;
  while (generation === state.generation && !aborter.signal.aborted) {
    try {
      const res = await api(`${mailboxPath(state.address)}/wait`, {
        query: { view: state.view, cursor, timeout: 25 },
        signal: aborter.signal,
      });
      failures = 0;
      cursor = res.headers.get('Mail-Relay-Cursor') ?? cursor;
      if (res.status !== 200) continue;
      const body = await res.json();
      cursor = body.cursor;
      if (generation !== state.generation) return;
      showNew(body.items);
    } catch (err) {
      if (aborter.signal.aborted || generation !== state.generation) return;
      if (err instanceof ApiError && err.status === 401) return;
      // A cursor the mailbox no longer knows (its index was reset): start again from the list.
      if (err instanceof ApiError && err.code === 'invalid_cursor') return void loadList();
      // The server restarting, a network change: try again, more slowly each time.
      failures++;
      await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 1000 * 2 ** failures)));
    }
  }
}

function showNew(items) {
  const shown = new Set(state.items.map((i) => i.id));
  const unshown = items.filter((i) => !shown.has(i.id));
  if (unshown.length === 0) return;
  // Mail received before the oldest entry shown (an import of old mail, a replay) is newly stored, not
  // new: with more to load, "Load more" brings it in its place. Put on the end now, it would sit above
  // the newer entries that page appends.
  const oldest = state.nextCursor === null ? undefined : state.items.at(-1)?.id;
  const fresh = oldest === undefined ? unshown : unshown.filter((i) => i.id > oldest);
  if (fresh.length > 0) {
    announce(`${fresh.length} new message${fresh.length === 1 ? '' : 's'}`);
    if (state.q || state.unseen) {
      // Whether they match the search is the server's to say: offer a reload instead of guessing.
      state.newWhileFiltered += fresh.length;
      els.notice.textContent = `${state.newWhileFiltered} new — show`;
      els.notice.hidden = false;
    } else {
      state.items = [...fresh, ...state.items].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
      renderList();
    }
  }
  refreshCounts().catch(reportError);
}

// ---- one message ---------------------------------------------------------------------------

/**
 * Closes the reader. The focus, if it was in the reader, goes back to the list: to the message's
 * entry, else (it was deleted) to the entry now at `index`, else to the list's heading.
 */
function closeMessage(index = -1) {
  const id = state.opening;
  const hadFocus = els.reader.contains(document.activeElement);
  state.selected = null;
  state.opening = null;
  els.reader.replaceChildren();
  els.layout.classList.remove('reading');
  for (const li of els.list.querySelectorAll('li.selected')) li.classList.remove('selected');
  for (const a of els.list.querySelectorAll('a[aria-current]')) a.removeAttribute('aria-current');
  if (hadFocus || focusLost()) focusList(id, index);
}

/** Focuses the list's entry of message `id`, else the entry at `index` (or the last), else the list's heading. */
function focusList(id, index = -1) {
  const links = [...els.list.querySelectorAll('li.message .open-cell > a')];
  const link =
    links.find((a) => a.closest('li').dataset.id === id) ??
    (index >= 0 ? links[Math.min(index, links.length - 1)] : undefined);
  (link ?? els.title).focus();
}

async function openMessage(id) {
  const address = state.address;
  const view = state.view;
  // The message asked for last is the one shown: one that answers after another was asked for, or
  // after the reader was closed or the mailbox changed, is dropped.
  state.opening = id;
  const current = () => state.opening === id && address === state.address && view === state.view;
  // On a narrow screen the reader takes the list's place (inbox.css) until "Back to list".
  els.layout.classList.add('reading');
  els.reader.replaceChildren(h('p', { class: 'empty' }, 'Loading…'));
  let message;
  try {
    message = await getJson(`${mailboxPath(address)}/messages/${id}`, { query: { view } });
  } catch (err) {
    if (!current()) return;
    els.reader.replaceChildren(backButton(), h('p', { class: 'empty' }, err.message));
    if (!(err instanceof ApiError && err.status === 404)) reportError(err);
    return;
  }
  if (!current()) return;
  state.selected = message;
  for (const li of els.list.querySelectorAll('li.message')) {
    li.classList.toggle('selected', li.dataset.id === id);
    const link = li.querySelector('.open-cell > a');
    if (li.dataset.id === id) link?.setAttribute('aria-current', 'true');
    else link?.removeAttribute('aria-current');
  }
  // Tab into the list comes to the message on show.
  setRover(id, 'open');
  renderMessage(message);
  // The focus goes to the message (its subject), unless the user has gone on to the search box or
  // the sidebar meanwhile: from the list, the reader is otherwise a tab through every entry away.
  const active = document.activeElement;
  if (focusLost() || els.list.contains(active) || els.reader.contains(active)) {
    els.reader.querySelector('h2.subject')?.focus();
  }
  if (!message.seen) setSeen(message, true, false);
}

async function setSeen(message, seen, announce = true) {
  try {
    const item = await getJson(`${mailboxPath(state.address)}/messages/${message.id}`, {
      method: 'PATCH',
      query: { view: state.view },
      body: { seen },
    });
    message.seen = item.seen;
    updateItem(item);
    const button = els.reader.querySelector('button.seen-toggle');
    if (state.selected?.id === message.id && button !== null) {
      button.textContent = item.seen ? 'Mark unread' : 'Mark read';
    }
    if (announce) toast(seen ? 'Marked read' : 'Marked unread');
  } catch (err) {
    reportError(err);
  }
}

/** "Back to list": shown on a narrow screen only, where the reader takes the list's place (inbox.css). */
function backButton() {
  return h(
    'button',
    {
      class: 'secondary back',
      onclick: () => {
        history.pushState(null, '', `#/${enc(state.address)}/${state.view}`);
        closeMessage();
      },
    },
    'Back to list',
  );
}

function messagePath(message) {
  return `${mailboxPath(state.address)}/messages/${message.id}`;
}

function renderMessage(m) {
  const a = m.addresses;
  const field = (label, list) =>
    list.length === 0 ? null : [h('dt', {}, label), h('dd', {}, list.map(formatAddress).join(', '))];
  const badges = [
    ...m.tags.map((t) =>
      h('span', { class: 'badge warn', title: 'A verdict that failed under a tag policy' }, t),
    ),
    ...(m.quarantineReasons ?? []).map((r) => h('span', { class: 'badge danger' }, `quarantined: ${r}`)),
    m.parseFailed ? h('span', { class: 'badge danger' }, 'could not be parsed: see the source') : null,
  ];
  const cut = Object.entries(m.truncated)
    .filter(([, v]) => v)
    .map(([k]) => k);
  const body = h('div', { class: 'body' });
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Show the message as' });
  // Remote images are shown once asked, for this message while it is open (also after another tab);
  // not remembered: a sender is only a From: header, which anyone can write.
  let remoteImages = false;
  const showHtml = () => {
    body.replaceChildren(
      htmlFrame(m, remoteImages, () => {
        remoteImages = true;
        showHtml();
        // The button is gone: the focus goes to the bar that now says the images are shown.
        body.querySelector('.remote-images')?.focus();
      }),
    );
    markTab(tabs, 'HTML');
  };
  const showText = () => {
    body.replaceChildren(h('pre', { class: 'text' }, m.text ?? ''));
    markTab(tabs, 'Text');
  };
  const showSource = async () => {
    markTab(tabs, 'Source');
    if (m.size > MAX_SOURCE_BYTES) {
      body.replaceChildren(
        h('p', { class: 'empty' }, `The message is ${formatBytes(m.size)}: download it instead.`),
      );
      return;
    }
    const loading = h('p', { class: 'empty' }, 'Loading…');
    body.replaceChildren(loading);
    let shown;
    try {
      const res = await api(`${messagePath(m)}/raw`, { query: { view: state.view } });
      shown = h('pre', { class: 'source' }, decodeSource(await res.arrayBuffer()));
    } catch (err) {
      shown = h('p', { class: 'empty' }, err.message);
    }
    // Another tab chosen meanwhile keeps the body.
    if (loading.isConnected) body.replaceChildren(shown);
  };
  if (m.html !== null) tabs.append(h('button', { class: 'tab', onclick: showHtml }, 'HTML'));
  if (m.text !== null) tabs.append(h('button', { class: 'tab', onclick: showText }, 'Text'));
  tabs.append(h('button', { class: 'tab', onclick: showSource }, 'Source'));

  els.reader.replaceChildren();
  append(
    els.reader,
    h(
      'div',
      { class: 'actions' },
      backButton(),
      state.view === 'inbox' ? h('button', { onclick: () => openCompose(m) }, 'Reply') : null,
      h(
        'button',
        { class: 'secondary seen-toggle', onclick: () => setSeen(m, !m.seen) },
        m.seen ? 'Mark unread' : 'Mark read',
      ),
      h(
        'button',
        {
          class: 'secondary',
          onclick: async () => {
            try {
              await saveAs(
                await api(`${messagePath(m)}/raw`, { query: { view: state.view } }),
                `${m.id}.eml`,
              );
            } catch (err) {
              reportError(err);
            }
          },
        },
        'Download .eml',
      ),
      h('button', { class: 'danger', onclick: () => deleteMessage(m) }, 'Delete'),
    ),
    h('h2', { class: 'subject', tabindex: -1 }, plain(m.subject) || '(no subject)'),
    h(
      'dl',
      { class: 'headers' },
      field('From', a.from),
      field('To', a.to),
      field('Cc', a.cc),
      field('Reply-To', a.replyTo),
      [h('dt', {}, 'Date'), h('dd', {}, formatDate(m.date ?? m.receivedAt, true))],
      m.plusTag ? [h('dt', {}, 'Delivered to'), h('dd', {}, plain(m.recipient))] : null,
      [h('dt', {}, 'Size'), h('dd', {}, formatBytes(m.size))],
    ),
    badges.some(Boolean) ? h('div', { class: 'badges' }, badges) : null,
    cut.length > 0
      ? h('p', { class: 'note' }, `Shortened here (${cut.join(', ')}): the whole message is in the .eml.`)
      : null,
    m.attachments.length > 0 ? renderAttachments(m) : null,
    tabs,
    body,
  );
  if (m.html !== null) showHtml();
  else if (m.text !== null) showText();
  // Nothing the parser could show (a multipart without its boundaries, a body with no type it
  // knows), and nothing to download either: the source is all there is to read.
  else if (m.parseFailed || m.attachments.length === 0) showSource();
  else body.replaceChildren(h('p', { class: 'empty' }, '(no text)'));
}

function markTab(tabs, name) {
  for (const tab of tabs.children) {
    tab.classList.toggle('current', tab.textContent === name);
    tab.setAttribute('aria-pressed', String(tab.textContent === name));
  }
}

function renderAttachments(m) {
  return h(
    'ul',
    { class: 'attachments', 'aria-label': 'Attachments' },
    m.attachments.map((part) => {
      const name = plain(part.filename) || `part-${part.partId}`;
      return h(
        'li',
        {},
        h(
          'button',
          {
            class: 'attachment',
            title: `Download ${name}`,
            onclick: async () => {
              try {
                await saveAs(
                  await api(`${messagePath(m)}/parts/${part.partId}`, { query: { view: state.view } }),
                  name,
                );
              } catch (err) {
                reportError(err);
              }
            },
          },
          name,
        ),
        h('span', { class: 'meta' }, ` ${plain(part.contentType)}, ${formatBytes(part.size)}`),
      );
    }),
  );
}

/**
 * The policy of a message's frame: a `<meta>` at the very top of its srcdoc, before anything of the
 * message. A srcdoc document inherits the page's policy (INBOX_CSP, functions/api/inbox.ts) and can
 * only add to it, so the page allows images from anywhere and this takes them away again until the
 * reader asks for them ("Show"). Everything else stays refused either way: scripts (the sandbox
 * runs none anyway), style sheets and fonts from elsewhere, frames, plugins, media, connections
 * (`ping`), prefetches, form posts and `<base>`.
 */
function framePolicy(remoteImages) {
  return [
    "default-src 'none'",
    "style-src 'unsafe-inline'",
    remoteImages ? 'img-src data: http: https:' : 'img-src data:',
    "form-action 'none'",
    "base-uri 'none'",
  ].join('; ');
}

/**
 * Whether a URL as a message writes it leads elsewhere (http, https, `//host/…`); a relative one
 * leads to this page's own origin.
 */
function isRemoteUrl(value) {
  try {
    const url = new URL(value, 'https://relative.invalid/');
    return /^https?:$/.test(url.protocol) && url.hostname !== 'relative.invalid';
  } catch {
    return false;
  }
}

/** The URLs of a `srcset` (`a.png 1x, b.png 2x`). */
function srcsetUrls(srcset) {
  return srcset.split(/,\s+|,$/).map((candidate) => candidate.trim().split(/\s+/)[0] ?? '');
}

/**
 * The `url()`s of CSS that can name images: not those of `@import` or `@font-face`, which "Show"
 * leaves blocked. A `url()` the CSS writes with escapes is not found: such an image is only blocked
 * without a bar to show it.
 */
function cssImageUrls(css) {
  const text = css
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/@import[^;]*;?/gi, '')
    .replace(/@font-face\s*\{[^}]*\}/gi, '');
  return [...text.matchAll(/url\(\s*(?:"([^"]*)"|'([^']*)'|([^)\s]*))/gi)].map((m) => m[1] ?? m[2] ?? m[3]);
}

/**
 * Whether a message's HTML names images elsewhere that "Show" would load: `src` of `img` and
 * `input type=image`, `srcset` (also of a `picture`'s `source`), `poster`, SVG `image` and `feImage`,
 * and CSS `url()`s in `style` attributes and elements. Parsed by the browser's own HTML parser into
 * a document that loads nothing and runs nothing (DOMParser).
 */
function referencesRemoteImages(doc) {
  // The elements that can name an image (SVG's by their camelCase names, hence `svg *`).
  for (const el of doc.querySelectorAll('img, input, source, video, style, [style], svg *')) {
    const tag = el.localName;
    const urls = [];
    const attr = (name) => el.getAttribute(name);
    if (tag === 'img' || (tag === 'input' && attr('type')?.toLowerCase() === 'image')) urls.push(attr('src'));
    if (tag === 'img' || tag === 'source') urls.push(...srcsetUrls(attr('srcset') ?? ''));
    if (tag === 'video') urls.push(attr('poster'));
    if (tag === 'image' || tag === 'feImage') urls.push(attr('href'), attr('xlink:href'));
    if (tag === 'style') urls.push(...cssImageUrls(el.textContent));
    urls.push(...cssImageUrls(attr('style') ?? ''));
    if (urls.some((url) => url !== null && isRemoteUrl(url))) return true;
  }
  return false;
}

/**
 * The message's HTML as the frame is given it, from its parsed document (DOMParser). Taken out:
 * its `<link>`s and its frames and plugins (`iframe`, `frame`, `object`, `embed`). The frame's
 * policy refuses all they would load, so they show nothing, but some still reach the sender, whose
 * server then learns that, when and from where the message was read: Chromium opens a connection
 * to an `iframe`'s host before it refuses the frame, it checks a `prefetch` against `img-src` (so
 * "Show" would fetch it), and no CSP directive governs `preconnect` or `dns-prefetch`. With
 * `remoteImages`, `background` attributes (of `body`, `table`, `td`, an old way to put a picture
 * behind text) go too: the reader asked for the images the bar counted, and nothing more.
 */
function frameHtml(doc, remoteImages) {
  for (const el of doc.querySelectorAll('link, iframe, frame, object, embed')) el.remove();
  if (remoteImages) for (const el of doc.querySelectorAll('[background]')) el.removeAttribute('background');
  return doc.documentElement.outerHTML;
}

/**
 * The message's HTML in a frame that runs no script (no `allow-scripts`) and has an origin of its
 * own (no `allow-same-origin`); links open in a new tab. The frame's policy (`framePolicy`) blocks
 * remote images until `remoteImages`, and everything else from elsewhere always: inline images
 * (cid:) are handed in as data: URLs. When the message names remote images, a bar says they are
 * hidden, with "Show", which calls `onShowRemote`.
 */
function htmlFrame(m, remoteImages, onShowRemote) {
  const frame = h('iframe', {
    class: 'html',
    title: 'Message body',
    sandbox: 'allow-popups allow-popups-to-escape-sandbox',
    referrerpolicy: 'no-referrer',
  });
  const head =
    `<!doctype html><meta http-equiv="Content-Security-Policy" content="${framePolicy(remoteImages)}">` +
    '<meta charset="utf-8"><meta name="referrer" content="no-referrer"><base target="_blank">' +
    '<style>html{color-scheme:light}body{font:14px/1.45 system-ui,sans-serif;margin:12px;overflow-wrap:anywhere}img{max-width:100%;height:auto}</style>';
  const remote = referencesRemoteImages(new DOMParser().parseFromString(m.html, 'text/html'));
  let bar = null;
  if (remote && remoteImages) {
    bar = h('p', { class: 'note remote-images', tabindex: -1 }, 'Remote images are shown.');
  } else if (remote) {
    bar = h(
      'p',
      { class: 'note remote-images' },
      'Remote images are hidden — ',
      h(
        'button',
        { class: 'secondary', onclick: onShowRemote },
        'Show',
        h('span', { class: 'sr-only' }, ' remote images'),
      ),
    );
  }
  const fill = (html) => {
    frame.srcdoc = head + frameHtml(new DOMParser().parseFromString(html, 'text/html'), remoteImages);
  };
  // With inline images the frame is filled once they are in (one load, and no `cid:` the CSP refuses first).
  if (m.attachments.some(isInlineImage) && /cid:/i.test(m.html)) withInlineImages(m).then(fill);
  else fill(m.html);
  return h('div', { class: 'html-wrap' }, bar, frame);
}

/** Whether a part is an inline image the frame is given (as a data: URL). */
function isInlineImage(p) {
  return p.contentId && p.contentType.startsWith('image/') && p.size <= MAX_INLINE_IMAGE_BYTES;
}

/** Each message's HTML with its inline images in, fetched once: "Show" renders the frame again. */
const inlinedHtml = new WeakMap();

function withInlineImages(m) {
  let html = inlinedHtml.get(m);
  if (html === undefined) {
    html = inlineImages(m);
    inlinedHtml.set(m, html);
  }
  return html;
}

/** The message's HTML, its inline images (cid:) made data: URLs of their parts. */
async function inlineImages(m) {
  // The message's own path, whatever the reader goes to while its images load.
  const path = messagePath(m);
  const view = state.view;
  let html = m.html;
  for (const part of m.attachments.filter(isInlineImage)) {
    try {
      const res = await api(`${path}/parts/${part.partId}`, { query: { view } });
      const url = await blobToDataUrl(await res.blob());
      const id = part.contentId.replace(/^<|>$/g, '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      html = html.replace(new RegExp(`cid:${id}(?=["'\\s)>])`, 'gi'), url);
    } catch (err) {
      reportError(err);
    }
  }
  return html;
}

async function deleteMessage(m) {
  if (!confirm(`Delete “${plain(m.subject) || '(no subject)'}”?`)) return;
  try {
    await api(messagePath(m), { method: 'DELETE', query: { view: state.view } });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) return reportError(err);
  }
  const index = state.items.findIndex((i) => i.id === m.id);
  state.items = state.items.filter((i) => i.id !== m.id);
  renderList();
  toast('Deleted');
  // The focus goes to the message that took its place in the list.
  if (state.opening === m.id) {
    history.replaceState(null, '', `#/${enc(state.address)}/${state.view}`);
    closeMessage(index);
  } else if (focusLost()) {
    // Deleted from the list (the Delete key) while another message is on show: that one stays.
    focusList(null, index);
  }
  refreshCounts().catch(reportError);
}

/** The most ids one batch delete takes (the API's `POST …/messages/delete`). */
const MAX_DELETE_MANY = 1000;

/** Deletes the ticked messages with the API's batch delete, and takes them off the list. */
async function deleteChecked(button) {
  const { address, view } = state;
  const ids = state.items.filter((i) => state.checked.has(i.id)).map((i) => i.id);
  if (ids.length === 0) return;
  if (!confirm(`Delete ${ids.length} selected message${ids.length === 1 ? '' : 's'}?`)) return;
  button.disabled = true;
  const gone = new Set();
  try {
    for (let i = 0; i < ids.length; i += MAX_DELETE_MANY) {
      const batch = ids.slice(i, i + MAX_DELETE_MANY);
      const r = await getJson(`${mailboxPath(address)}/messages/delete`, {
        method: 'POST',
        query: { view },
        body: { ids: batch },
      });
      // Not there any more (deleted elsewhere meanwhile) is gone all the same.
      for (const id of [...r.deleted, ...r.notFound]) gone.add(id);
    }
    toast(`Deleted ${gone.size} message${gone.size === 1 ? '' : 's'}`);
  } catch (err) {
    reportError(err);
  } finally {
    button.disabled = false;
  }
  if (address !== state.address || view !== state.view) return;
  const first = state.items.findIndex((i) => gone.has(i.id));
  state.items = state.items.filter((i) => !gone.has(i.id));
  if (state.opening !== null && gone.has(state.opening)) {
    history.replaceState(null, '', `#/${enc(address)}/${view}`);
    closeMessage(first);
  }
  renderList();
  // The button hid itself: the focus goes to the message now where the first deleted one was.
  if (focusLost()) focusList(null, first);
  refreshCounts().catch(reportError);
}

/** Deletes the mailbox view on show, a page (1,000) a request, saying on `button` how far it got. */
async function deleteAll(button) {
  // The mailbox and view asked for: the user may go to another while this runs.
  const { address, view } = state;
  const what = `${displayAddress(address)} (${view === 'sent' ? 'Sent' : 'Inbox'})`;
  if (!confirm(`Delete every message in ${what}?`)) return;
  const label = button.textContent;
  button.disabled = true;
  button.textContent = 'Deleting…';
  let deleted = 0;
  try {
    for (;;) {
      const r = await getJson(`${mailboxPath(address)}/messages`, { method: 'DELETE', query: { view } });
      deleted += r.deleted;
      button.textContent = `Deleting… ${deleted}`;
      if (!r.more) break;
    }
    toast(`Deleted ${deleted} message${deleted === 1 ? '' : 's'} from ${what}`);
  } catch (err) {
    reportError(err);
  } finally {
    button.disabled = false;
    button.textContent = label;
    // Disabled, it lost the focus: it has it back, unless the user went elsewhere meanwhile.
    if (focusLost()) button.focus();
  }
  if (address !== state.address || view !== state.view) return;
  history.replaceState(null, '', `#/${enc(address)}/${view}`);
  closeMessage();
  await loadList();
}

// ---- compose ---------------------------------------------------------------------------------

function openCompose(replyTo) {
  const from = state.address;
  if (from === null) return toast('Choose a mailbox first', 'error');
  const input = (name, label, value = '', type = 'text') => [
    h('label', { for: `compose-${name}` }, label),
    h('input', { id: `compose-${name}`, name, type, value }),
  ];
  let to = '';
  let subject = '';
  let text = '';
  if (replyTo) {
    const target = replyTo.addresses.replyTo[0] ?? replyTo.addresses.from[0];
    to = target?.address ?? '';
    subject = /^re:/i.test(replyTo.subject) ? replyTo.subject : `Re: ${replyTo.subject}`;
    const quoted = (replyTo.text ?? '')
      .replace(/\r?\n$/, '')
      .split(/\r?\n/)
      .map((l) => `> ${l}`)
      .join('\n');
    const who = replyTo.addresses.from[0] ? formatAddress(replyTo.addresses.from[0]) : 'the sender';
    text = `\n\nOn ${formatDate(replyTo.date ?? replyTo.receivedAt, true)}, ${who} wrote:\n${quoted}\n`;
  }
  const error = h('p', { class: 'error', role: 'alert' });
  const textarea = h('textarea', { id: 'compose-text', name: 'text', rows: 14 });
  textarea.value = text;
  const send = h('button', { type: 'submit' }, 'Send');
  // One key per message composed: a second click, or a retry after a lost answer, does not send twice.
  const idempotencyKey = crypto.randomUUID();
  const form = h(
    'form',
    {
      method: 'dialog',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        const data = new FormData(form);
        const body = {
          to: splitAddresses(String(data.get('to'))),
          cc: splitAddresses(String(data.get('cc'))),
          subject: String(data.get('subject')),
          text: String(data.get('text')),
        };
        if (body.cc.length === 0) delete body.cc;
        // Threaded under the message replied to, when its Message-ID is one the API takes (a malformed
        // one would have the reply refused; it goes unthreaded instead).
        // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
        if (replyTo?.messageId && /^<?[^<>\s\x00-\x1f\x7f]+>?$/.test(replyTo.messageId)) {
          body.inReplyTo = replyTo.messageId;
          body.references = replyTo.messageId;
        }
        send.disabled = true;
        try {
          const result = await getJson(`${mailboxPath(from)}/send`, {
            method: 'POST',
            body,
            headers: { 'Idempotency-Key': idempotencyKey },
          });
          dialog.close();
          const refused = result.refused?.length ? ` (refused: ${result.refused.join(', ')})` : '';
          toast(`Sent to ${result.recipients.join(', ')}${refused}`, refused ? 'error' : 'info');
          refreshCounts().catch(reportError);
        } catch (err) {
          error.textContent = err instanceof ApiError ? `${err.message} (${err.code})` : String(err.message);
        } finally {
          send.disabled = false;
          // Disabled while sending, it lost the focus (to the page behind the dialog): it has it back.
          if (dialog.open && !dialog.contains(document.activeElement)) send.focus();
        }
      },
    },
    h('h2', { id: 'compose-title' }, replyTo ? 'Reply' : 'New message'),
    h('p', { class: 'sender' }, `From: ${displayAddress(from)}`),
    input('to', 'To', to),
    input('cc', 'Cc'),
    input('subject', 'Subject', subject),
    h('label', { for: 'compose-text' }, 'Message'),
    textarea,
    error,
    h(
      'div',
      { class: 'actions' },
      send,
      h(
        'button',
        { type: 'button', class: 'secondary', onclick: () => discard() && dialog.close() },
        'Cancel',
      ),
    ),
  );
  // Escape and Cancel ask before a draft that was written in is thrown away.
  const draftOf = () => JSON.stringify([...new FormData(form).values()]);
  let opened = '';
  const discard = () => draftOf() === opened || confirm('Discard this message?');
  const dialog = h(
    'dialog',
    {
      class: 'compose',
      'aria-labelledby': 'compose-title',
      onclose: () => dialog.remove(),
      oncancel: (event) => {
        if (!discard()) event.preventDefault();
      },
    },
    form,
  );
  document.body.append(dialog);
  dialog.showModal();
  opened = draftOf();
  (replyTo ? textarea : form.querySelector('#compose-to')).focus();
  if (replyTo) textarea.setSelectionRange(0, 0);
}

// ---- start -----------------------------------------------------------------------------------

/** The token of a `#token=…` link (a CLI prints one), taken out of the address bar at once. */
function tokenFromHash() {
  const linked = new URLSearchParams(location.hash.replace(/^#/, '')).get('token');
  if (linked !== null) history.replaceState(null, '', location.pathname);
  return linked;
}

/** Signs in without the form: with a token kept in this browser (`stored`), or from a link. */
async function signInWith(token, stored) {
  try {
    await signIn(token, undefined);
  } catch (err) {
    const refused = err instanceof ApiError && err.status === 401;
    // A kept token that is refused is forgotten; a link's token never touches what is kept.
    if (stored && refused) session.clear();
    renderSignIn(refused ? 'That token is not valid.' : err.message);
  }
}

async function main() {
  window.addEventListener('hashchange', () => {
    // A `#token=` link opened in this tab changes only the fragment: no new page load.
    const linked = tokenFromHash();
    if (linked !== null) signInWith(linked, false);
    else if (state.me !== null) followHash().catch(reportError);
  });
  const linked = tokenFromHash();
  const token = linked ?? session.load();
  if (token === null) return renderSignIn();
  await signInWith(token, linked === null);
}

main();
