// The dashboard: lists sessions, starts one, opens its viewer, cancels.
//
// The API key stays in this tab's sessionStorage and goes out only as a
// Bearer header to this origin's API.

const KEY = 'mc.apiKey';
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
const keyInput = $('api-key');
const message = $('message');
const rows = $('rows');

let refreshTimer = null;

function apiKey() {
  try { return sessionStorage.getItem(KEY) || ''; } catch { return ''; }
}

function say(text, error) {
  message.textContent = text;
  message.classList.toggle('error', !!error);
}

async function api(method, path, body) {
  const headers = { 'Authorization': 'Bearer ' + apiKey(), 'Accept': 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit', cache: 'no-store',
  });
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  if (!res.ok) {
    const e = (data && (data.error || data)) || {};
    const msg = (typeof e === 'string' ? e : e.message) || res.statusText;
    const err = new Error(msg + ' (' + res.status + ')');
    err.status = res.status;
    throw err;
  }
  return data;
}

// Shapes are read leniently: {sessions:[…]} or […]; {session, viewer} or a
// session with a viewer field.
function sessionOf(d) { return (d && d.session) || d || {}; }
function viewerURLOf(d) {
  if (!d) return '';
  const v = d.viewer || (d.session && d.session.viewer) || {};
  return v.url || d.viewer_url || '';
}

function cell(text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text == null ? '' : String(text);
  return td;
}

function button(text, cls, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (cls) b.className = cls;
  b.addEventListener('click', onclick);
  return b;
}

function render(list) {
  rows.replaceChildren();
  if (!list.length) {
    const tr = document.createElement('tr');
    tr.append(cell('No sessions.'));
    tr.firstChild.colSpan = 7;
    rows.append(tr);
    return;
  }
  for (const s of list) {
    const tr = document.createElement('tr');
    tr.dataset.id = s.id;
    const state = document.createElement('span');
    state.className = 'state state-' + s.state;
    state.textContent = s.state;
    const st = cell('');
    st.append(state);
    const created = s.created_at ? new Date(s.created_at).toLocaleTimeString() : '';
    tr.append(cell(s.id, 'id'), cell(s.user_id), cell(s.provider), st, cell(s.reason), cell(created));
    const actions = cell('', 'actions');
    const live = !['completed', 'failed', 'cancelled', 'expired'].includes(s.state);
    if (live) actions.append(button('View', 'secondary', () => view(s.id)));
    if (live) actions.append(button('Cancel', 'danger', () => cancel(s.id)));
    tr.append(actions);
    rows.append(tr);
  }
}

function renderPool(p) {
  const body = $('pool-rows');
  body.replaceChildren();
  const list = (p && p.providers) || [];
  if (!list.length) {
    const tr = document.createElement('tr');
    tr.append(cell('No pooled machines: every session starts cold.'));
    tr.firstChild.colSpan = 4;
    body.append(tr);
    return;
  }
  for (const x of list) {
    const tr = document.createElement('tr');
    tr.dataset.provider = x.provider;
    tr.append(cell(x.provider), cell(x.target), cell(x.ready), cell(x.starting));
    body.append(tr);
  }
}

async function refresh() {
  if (!apiKey()) return;
  // The pool is shown beside the sessions; a controller without it
  // (an older one) still lists sessions.
  api('GET', 'api/v1/pool').then(renderPool, () => {});
  try {
    const d = await api('GET', 'api/v1/sessions?limit=100');
    const list = Array.isArray(d) ? d : (d && (d.sessions || d.items)) || [];
    list.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    render(list);
    $('refreshed').textContent = '· updated ' + new Date().toLocaleTimeString();
    document.body.dataset.state = 'ready';
  } catch (e) {
    say('Listing sessions: ' + e.message, true);
    if (e.status === 401) stopRefresh();
  }
}

// loadProviders offers only the providers that can run here (a provider
// whose CLI is not installed is listed unavailable by the API).
async function loadProviders() {
  try {
    const d = await api('GET', 'api/v1/providers');
    const opts = ((d && d.providers) || []).filter((p) => p.available !== false).map((p) => {
      const o = document.createElement('option');
      o.value = p.name;
      o.label = p.display_name || p.name;
      return o;
    });
    $('providers').replaceChildren(...opts);
  } catch (e) {
    // The static list stays; listing sessions reports a bad key.
  }
}

function startRefresh() {
  stopRefresh();
  loadProviders();
  refresh();
  refreshTimer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
}
function stopRefresh() {
  if (refreshTimer !== null) clearInterval(refreshTimer);
  refreshTimer = null;
}

function openViewer(id, url) {
  const u = new URL(url, location.href);
  $('viewer-title').textContent = 'Viewer · ' + id;
  $('viewer-open').href = u.href;
  $('viewer-frame').src = u.href;
  $('viewer-panel').hidden = false;
}

// view asks for a fresh viewer token (the list carries none) and opens the
// viewer.
async function view(id) {
  try {
    const d = await api('POST', 'api/v1/sessions/' + encodeURIComponent(id) + '/viewer-token');
    openViewer(id, (d && d.url) || viewerURLOf(d));
  } catch (e) {
    say('Opening the viewer of ' + id + ': ' + e.message, true);
  }
}

async function cancel(id) {
  try {
    await api('POST', 'api/v1/sessions/' + encodeURIComponent(id) + '/cancel');
    say('Cancelled ' + id + '.');
  } catch (e) {
    say('Cancelling ' + id + ': ' + e.message, true);
  }
  refresh();
}

$('key-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  try { sessionStorage.setItem(KEY, keyInput.value.trim()); } catch { /* private mode */ }
  keyInput.value = '';
  keyInput.placeholder = 'key set for this tab';
  say('');
  startRefresh();
});

$('forget').addEventListener('click', () => {
  try { sessionStorage.removeItem(KEY); } catch { /* nothing kept */ }
  keyInput.placeholder = 'mc_…';
  stopRefresh();
  rows.replaceChildren();
  say('API key forgotten.');
});

$('start-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!apiKey()) {
    say('Enter the API key first.', true);
    return;
  }
  const btn = $('start-btn');
  btn.disabled = true;
  try {
    const d = await api('POST', 'api/v1/sessions', {
      user_id: $('user-id').value.trim(), provider: $('provider').value.trim(),
    });
    const s = sessionOf(d);
    const url = viewerURLOf(d);
    if (url) {
      openViewer(s.id, url);
    }
    say('Started ' + s.id + ' (' + s.state + ').');
  } catch (e) {
    say('Starting a session: ' + e.message, true);
  } finally {
    btn.disabled = false;
  }
  refresh();
});

$('viewer-close').addEventListener('click', () => {
  $('viewer-frame').src = 'about:blank';
  $('viewer-panel').hidden = true;
});

window.addEventListener('message', (ev) => {
  if (ev.origin !== location.origin || !ev.data || ev.data.type !== 'mc-viewer') return;
  if (ev.data.state === 'signed-in' || ev.data.state === 'ended') refresh();
});

if (apiKey()) {
  keyInput.placeholder = 'key set for this tab';
  startRefresh();
} else {
  document.body.dataset.state = 'ready';
}
