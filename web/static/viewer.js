// The viewer of one session: noVNC connected to the gateway's WebSocket.
//
// The page opens the WebSocket itself and hands it to noVNC's RFB (which
// accepts a WebSocket in place of a URL), so that it sees every close frame's
// code and reason; noVNC's own "disconnect" event carries neither.
//
// State for people: the status line and the overlay. State for programs:
// window.mcViewer and <body data-state>, and, when embedded, a message
// {type: "mc-viewer", state, status, code, reason} posted to the parent
// window on every change.
//
// States: loading, connecting, starting (the gateway accepted the
// WebSocket and waits for the machine), connected, reconnecting, taken-over
// (close 4409), signed-in (close 1000), ended (a final close code), error
// (the page could not load noVNC).

const body = document.body;
const sessionID = body.dataset.sessionId;
const $ = (id) => document.getElementById(id);
const screenEl = $('screen');
const statusEl = $('status');
const overlayEl = $('overlay');
const overlayTitle = $('overlay-title');
const overlayText = $('overlay-text');
const takeoverBtn = $('takeover');
const retryBtn = $('retry');
const clipToggle = $('clipboard-toggle');
const clipPanel = $('clipboard-panel');
const clipText = $('clipboard');

// Close codes after which the page never reconnects by itself (DESIGN.md,
// "The gateway contract").
const FINAL = new Set([1000, 4401, 4403, 4404, 4410]);
const TAKEN_OVER = 4409;

// Words for close frames that carry no reason.
const DEFAULT_REASON = {
  1000: 'signed in',
  1001: 'the server is restarting',
  1005: 'the connection was closed',
  1006: 'the connection was lost',
  1011: 'internal error',
  1013: 'the machine did not become ready in time',
  4401: 'this viewer link is invalid or has expired',
  4403: 'this viewer link is not valid here',
  4404: 'no such session',
  4408: 'the connection stopped answering',
  4409: 'another viewer took over this session',
  4410: 'the session has ended',
  4502: 'the machine could not be reached',
  4503: 'the machine went away',
};

// Reconnect: exponential backoff with jitter.
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const BACKOFF_JITTER = 0.3;
// A connection that lived this long resets the backoff.
const BACKOFF_RESET_AFTER_MS = 10000;

const viewer = {
  sessionID,
  state: 'loading',
  status: '',
  lastCloseCode: null,
  lastCloseReason: '',
  connectedCount: 0,
  attempts: 0,
  retryScheduled: false,
  retryDelayMs: null,
  clipboardReceived: '',
  rfb: null,
};
window.mcViewer = viewer;

const token = takeToken();
// The page is at <prefix>/sessions/{id}/view; the gateway at
// <prefix>/api/v1/sessions/{id}/vnc (a proxy may mount everything under a
// prefix).
const prefix = location.pathname.slice(0, Math.max(0, location.pathname.lastIndexOf('/sessions/')));
const wsURL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + prefix +
  '/api/v1/sessions/' + encodeURIComponent(sessionID) + '/vnc?token=' + encodeURIComponent(token);

let RFB = null;
const finished = new WeakSet(); // RFB objects that reported their disconnect
let gen = 0; // the current connection attempt; events of older ones are ignored
let handled = 0; // the last attempt whose end was handled
let timer = null;
let backoff = 0;
let connectedAt = 0;

// takeToken reads the viewer token from the URL (query or fragment), keeps
// it in this tab's sessionStorage so that a reload reconnects, and removes it
// from the address bar (and so from history, bookmarks and screenshots).
function takeToken() {
  const url = new URL(location.href);
  const frag = new URLSearchParams(url.hash.slice(1));
  const t = url.searchParams.get('token') || frag.get('token') || '';
  if (url.searchParams.has('token') || frag.has('token')) {
    url.searchParams.delete('token');
    frag.delete('token');
    url.hash = frag.toString();
    history.replaceState(history.state, '', url.href);
  }
  const key = 'mc.viewer.token.' + sessionID;
  try {
    if (t) {
      sessionStorage.setItem(key, t);
      return t;
    }
    return sessionStorage.getItem(key) || '';
  } catch {
    return t; // storage blocked (some embedded contexts): no reload support
  }
}

function setState(state, status) {
  viewer.state = state;
  viewer.status = status;
  body.dataset.state = state;
  statusEl.textContent = status;
  retryBtn.hidden = state !== 'reconnecting';
  if (window.parent !== window) {
    window.parent.postMessage({
      type: 'mc-viewer', state, status,
      code: viewer.lastCloseCode, reason: viewer.lastCloseReason,
    }, '*');
  }
}

// showOverlay covers the screen with a message. A soft one (while
// connecting) fades in late, so that a quick connection does not flash.
function showOverlay(title, text, takeover, soft) {
  overlayTitle.textContent = title;
  overlayText.textContent = text;
  takeoverBtn.hidden = !takeover;
  overlayEl.classList.toggle('soft', !!soft);
  overlayEl.hidden = false;
  if (takeover && document.hasFocus()) {
    takeoverBtn.focus({ preventScroll: true }); // never steal focus from an embedding page
  }
}

function hideOverlay() {
  overlayEl.hidden = true;
  takeoverBtn.hidden = true;
}

function capital(s) {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}

function clearTimer() {
  if (timer !== null) {
    clearTimeout(timer);
    timer = null;
  }
  viewer.retryScheduled = false;
  viewer.retryDelayMs = null;
}

// connect starts a new attempt, abandoning the current one.
function connect() {
  clearTimer();
  hideOverlay();
  const prev = viewer.rfb;
  const my = ++gen;
  if (prev && !finished.has(prev)) {
    prev.disconnect();
  }
  viewer.attempts++;
  setState('connecting', 'Connecting…');
  showOverlay('Connecting…', '', false, true);

  let ws;
  try {
    ws = new WebSocket(wsURL, ['binary']);
  } catch (e) {
    ended(my, 1006, String(e && e.message || e));
    return;
  }
  // Listeners added before RFB's own handlers run first: this one sees the
  // close frame before noVNC reports its disconnect.
  ws.addEventListener('open', () => {
    if (my === gen && viewer.state === 'connecting') {
      setState('starting', 'Starting machine…');
      showOverlay('Starting machine…', 'This takes a few seconds.', false, true);
    }
  });
  ws.addEventListener('message', () => {
    if (my === gen && viewer.state === 'starting') {
      setState('connecting', 'Connecting…');
      showOverlay('Connecting…', '', false, true);
    }
  }, { once: true });
  ws.addEventListener('close', (ev) => ended(my, ev.code, ev.reason));

  let rfb;
  try {
    rfb = new RFB(screenEl, ws, { shared: true, wsProtocols: ['binary'] });
  } catch (e) {
    ws.close();
    ended(my, 1006, 'the viewer failed: ' + (e && e.message || e));
    return;
  }
  viewer.rfb = rfb;
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.clipViewport = false;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    if (my !== gen) return;
    viewer.connectedCount++;
    connectedAt = performance.now();
    hideOverlay();
    setState('connected', 'Connected');
  });
  rfb.addEventListener('disconnect', () => {
    finished.add(rfb);
    // noVNC gave up on its own (a protocol error) before the socket closed.
    ended(my, 1006, 'the connection failed');
  });
  rfb.addEventListener('securityfailure', (ev) => {
    ended(my, 4401, 'security negotiation failed' + (ev.detail.reason ? ': ' + ev.detail.reason : ''), true);
  });
  rfb.addEventListener('credentialsrequired', () => {
    // The gateway offers "no auth"; a VNC password is asked only when the
    // page is pointed at a plain VNC proxy.
    const password = window.prompt('VNC password');
    if (password === null) {
      rfb.disconnect();
      return;
    }
    rfb.sendCredentials({ password });
  });
  rfb.addEventListener('clipboard', (ev) => {
    const text = ev.detail.text;
    viewer.clipboardReceived = text;
    clipText.value = text;
    clipToggle.classList.add('fresh');
    if (navigator.clipboard && document.hasFocus()) {
      navigator.clipboard.writeText(text).catch(() => { /* no permission: the text area has it */ });
    }
  });
}

// ended handles the end of attempt my, once.
function ended(my, code, reason, final) {
  if (my !== gen || handled === my) return;
  handled = my;
  viewer.lastCloseCode = code;
  viewer.lastCloseReason = reason || '';
  const words = reason || DEFAULT_REASON[code] || ('closed with code ' + code);
  const lived = connectedAt ? performance.now() - connectedAt : 0;
  connectedAt = 0;

  if (code === 1000) {
    setState('signed-in', 'Signed in — you can close this window');
    showOverlay('Signed in', 'You can close this window.', false);
    return;
  }
  if (code === TAKEN_OVER) {
    setState('taken-over', capital(words));
    showOverlay('Opened elsewhere', capital(words) + '.', true);
    return;
  }
  if (final || FINAL.has(code)) {
    setState('ended', capital(words));
    showOverlay('Disconnected', capital(words) + '.', false);
    return;
  }
  if (lived > BACKOFF_RESET_AFTER_MS) {
    backoff = 0;
  }
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** backoff);
  backoff++;
  const delay = Math.round(base * (1 - BACKOFF_JITTER + Math.random() * 2 * BACKOFF_JITTER));
  viewer.retryScheduled = true;
  viewer.retryDelayMs = delay;
  setState('reconnecting', capital(words) + ' — reconnecting in ' + (delay / 1000).toFixed(1) + ' s…');
  showOverlay('Reconnecting…', capital(words) + '.', false, true);
  // navigator.onLine is not consulted: it is often wrong (containers, VPNs,
  // loopback-only hosts), and a failed attempt costs little.
  timer = setTimeout(() => {
    timer = null;
    connect();
  }, delay);
}

takeoverBtn.addEventListener('click', () => {
  backoff = 0;
  connect();
});
retryBtn.addEventListener('click', () => connect());

clipToggle.addEventListener('click', () => {
  const open = clipPanel.hidden;
  clipPanel.hidden = !open;
  clipToggle.setAttribute('aria-expanded', String(open));
  clipToggle.classList.remove('fresh');
  if (open) clipText.focus({ preventScroll: true });
});
function sendClipboard() {
  if (viewer.rfb && viewer.state === 'connected') {
    viewer.rfb.clipboardPasteFrom(clipText.value);
  }
}
$('clipboard-send').addEventListener('click', sendClipboard);
$('clipboard-clear').addEventListener('click', () => { clipText.value = ''; });
clipText.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
    ev.preventDefault();
    sendClipboard();
  }
});

// Load noVNC. A failed module load is cached by the browser for the life of
// the page, so the page retries by reloading itself, a few times.
const RELOADS_KEY = 'mc.viewer.reloads.' + sessionID;
const MAX_RELOADS = 3;
try {
  RFB = (await import(new URL(body.dataset.novnc + '/core/rfb.js', location.href).href)).default;
  try { sessionStorage.removeItem(RELOADS_KEY); } catch { /* no storage */ }
} catch (e) {
  let reloads = MAX_RELOADS;
  try { reloads = Number(sessionStorage.getItem(RELOADS_KEY) || 0); } catch { /* no storage: no retry */ }
  const why = 'Could not load the viewer: ' + (e && e.message || e);
  if (reloads < MAX_RELOADS) {
    sessionStorage.setItem(RELOADS_KEY, String(reloads + 1));
    setState('error', why + ' — retrying…');
    setTimeout(() => location.reload(), BACKOFF_FIRST_MS * 2 ** reloads);
  } else {
    setState('error', why);
    showOverlay('Could not load the viewer', 'Reload the page to try again.', false);
  }
}
if (RFB) {
  connect();
}
