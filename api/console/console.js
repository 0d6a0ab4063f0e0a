// Herald support console (SPEC §9): plain JavaScript over herald-api's
// JSON API, served from the same origin under a strict CSP. Every value of
// a message is put in the page with textContent or as an attribute, never
// as markup; the message's HTML goes only into a sandboxed srcdoc iframe
// that runs no script.
'use strict';

(() => {
  const TOKEN_KEY = 'herald.console.token';
  const FILTERS = ['to', 'from', 'q', 'org', 'account', 'type', 'status', 'path',
    'since', 'until', 'limit'];
  const TIMES = new Set(['since', 'until']);
  const EXPORT_LIMIT = '500'; // the API's maximum page

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // A new element with a class and text (text is never parsed as markup).
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  const state = {
    params: null,    // URLSearchParams of the current search (no cursor)
    cursors: [null], // cursors[i]: the cursor of page i
    page: 0,
    openId: null,
    fresh: new Set(), // ids returned by resends in this tab
    seq: 0,           // answers of an older search are dropped
  };

  // ---- the token ----

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lives until reload */ }
    memoryToken = t || null;
  }
  let memoryToken = null;
  const currentToken = () => token() || memoryToken;

  function showLogin(message) {
    $('#app').hidden = true;
    $('#session').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = message || '';
    const input = $('#login input[name=token]');
    input.value = '';
    input.focus();
  }

  function showApp() {
    $('#login').hidden = true;
    $('#login-error').textContent = '';
    $('#app').hidden = false;
    $('#session').hidden = false;
  }

  function signOut(message) {
    setToken(null);
    closeMessage();
    clearResults('No search yet.');
    hideNotice();
    showLogin(message);
  }

  // ---- talking to herald-api ----

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || ('HTTP ' + status));
      this.status = status;
      this.field = body && typeof body.field === 'string' ? body.field : null;
    }
  }

  // fetch with the bearer token; the parsed JSON, or the Response with raw.
  async function api(path, opts) {
    opts = opts || {};
    const headers = { Authorization: 'Bearer ' + currentToken() };
    if (opts.json !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, {
        method: opts.method || 'GET',
        headers,
        body: opts.json !== undefined ? JSON.stringify(opts.json) : undefined,
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new ApiError(0, { error: 'herald-api does not answer (' + e.message + ')' });
    }
    if (r.ok) return opts.raw ? r : r.json();
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    throw new ApiError(r.status, body || { error: r.status + ' ' + r.statusText });
  }

  // A sentence for an error answer; 401 sends back to the sign-in form.
  function explain(err) {
    if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
    switch (err.status) {
    case 0: return err.message;
    case 401:
      signOut('The token was refused (unknown or revoked). Sign in again.');
      return null;
    case 403: return 'Not allowed with this token: ' + err.message +
      ' (resending needs a support token created with --resend).';
    case 404: return 'No such message, or it belongs to an organisation ' +
      'outside this token.';
    case 503: return 'The Message Center or Redis does not answer right now (' +
      err.message + '). Try again in a moment.';
    default: return err.status + ': ' + err.message;
    }
  }

  // ---- notices and field errors ----

  function notice(text, info) {
    if (!text) return;
    $('#notice-text').textContent = text;
    $('#notice').classList.toggle('info', !!info);
    $('#notice').hidden = false;
  }

  function hideNotice() { $('#notice').hidden = true; }

  function clearFieldErrors() {
    $$('#search [data-error-for]').forEach((s) => { s.textContent = ''; });
    $$('#search .invalid').forEach((i) => i.classList.remove('invalid'));
  }

  // Shows a message next to the form's field `name`; false when no such field.
  function fieldError(name, text) {
    const span = $$('#search [data-error-for]').find((s) => s.dataset.errorFor === name);
    if (!span || name === '') return false;
    span.textContent = text;
    const input = $('#search').elements[name];
    if (input) {
      input.classList.add('invalid');
      input.focus();
    }
    return true;
  }

  function searchError(err) {
    if (err instanceof ApiError && err.status === 400 && err.field &&
        fieldError(err.field, err.message)) return;
    notice(explain(err));
  }

  // ---- times ----

  const localFmt = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });

  // <time>: local time shown, the UTC time (as stored) in its title.
  function timeNode(iso) {
    if (!iso) return el('span', 'none', '—');
    const d = new Date(iso);
    const t = el('time', null, Number.isNaN(d.getTime()) ? iso : localFmt.format(d));
    t.dateTime = iso;
    t.title = Number.isNaN(d.getTime()) ? iso
      : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '').replace(/Z$/, '') + ' UTC';
    return t;
  }

  // datetime-local (the browser's zone) -> RFC 3339 UTC, or null.
  function toRfc3339(v) {
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  }

  function badge(status) {
    const b = el('span', 'badge', status || '?');
    if (status) b.classList.add('st-' + String(status).replace(/[^a-z]/g, ''));
    return b;
  }

  function orNone(text, none) {
    return text === null || text === undefined || text === ''
      ? el('span', 'none', none || '—') : document.createTextNode(String(text));
  }

  // ---- the search ----

  function formParams() {
    const f = $('#search');
    const p = new URLSearchParams();
    for (const name of FILTERS) {
      const v = String(f.elements[name].value || '').trim();
      if (!v) continue;
      if (TIMES.has(name)) {
        const t = toRfc3339(v);
        if (!t) {
          fieldError(name, 'not a date and time');
          return null;
        }
        p.set(name, t);
      } else {
        p.set(name, v);
      }
    }
    return p;
  }

  // The form's raw values in the address (#...), so a search can be shared
  // (the token is never part of it).
  function saveHash() {
    const f = $('#search');
    const h = new URLSearchParams();
    for (const name of FILTERS) {
      const v = f.elements[name].value;
      if (v && !(name === 'limit' && v === '50')) h.set(name, v);
    }
    if (state.openId) h.set('id', state.openId);
    const s = h.toString();
    history.replaceState(null, '', s ? '#' + s : location.pathname + location.search);
  }

  function loadHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ''));
    const f = $('#search');
    for (const name of FILTERS)
      if (h.has(name)) f.elements[name].value = h.get(name);
    return h;
  }

  function clearResults(summary) {
    $('#results tbody').replaceChildren();
    $('#summary').textContent = summary;
    $('#next').hidden = true;
    $('#prev').hidden = true;
  }

  async function runSearch() {
    clearFieldErrors();
    hideNotice();
    const p = formParams();
    if (!p) return;
    state.params = p;
    state.cursors = [null];
    state.page = 0;
    saveHash();
    await loadPage();
  }

  async function loadPage() {
    const seq = ++state.seq;
    const p = new URLSearchParams(state.params);
    const cursor = state.cursors[state.page];
    if (cursor) p.set('cursor', cursor);
    $('#summary').textContent = 'Searching…';
    $('#search-go').disabled = true;
    let body;
    try {
      body = await api('v1/messages?' + p.toString());
    } catch (e) {
      if (seq === state.seq) {
        clearResults('');
        searchError(e);
      }
      return;
    } finally {
      if (seq === state.seq) $('#search-go').disabled = false;
    }
    if (seq !== state.seq) return;
    renderRows(body.messages || []);
    state.cursors.length = state.page + 1;
    if (body.next_cursor) state.cursors.push(body.next_cursor);
    $('#next').hidden = !body.next_cursor;
    $('#prev').hidden = state.page === 0;
    const n = (body.messages || []).length;
    $('#summary').textContent = n === 0 && state.page === 0
      ? 'No message matches.'
      : 'Page ' + (state.page + 1) + ': ' + n + ' message' + (n === 1 ? '' : 's') +
        (body.next_cursor ? ' (more on the next page)' : '');
  }

  function recipientsSummary(m) {
    const to = Array.isArray(m.to) ? m.to : [];
    const all = (Array.isArray(m.recipients) ? m.recipients : to)
      .map((r) => (r && r.email) || '').filter(Boolean);
    const first = to.length && to[0] && to[0].email ? to[0].email : (all[0] || '');
    const td = el('td', null, first + (all.length > 1 ? ' +' + (all.length - 1) : ''));
    td.title = all.join(', ');
    return td;
  }

  function renderRows(messages) {
    const tbody = $('#results tbody');
    const rows = messages.map((m) => {
      const tr = el('tr');
      tr.dataset.id = m.id;
      tr.tabIndex = 0;
      if (state.fresh.has(m.id)) tr.classList.add('fresh');
      if (m.id === state.openId) tr.classList.add('selected');
      const time = el('td', 'time');
      time.append(timeNode(m.created_at));
      const subject = el('td', 'subject');
      subject.append(orNone(m.subject, '(no subject)'));
      const status = el('td');
      status.append(badge(m.status));
      tr.append(time, el('td', null, m.org || ''), recipientsSummary(m), subject, status,
        el('td', null, m.path || ''));
      return tr;
    });
    if (rows.length === 0) {
      const tr = el('tr');
      const td = el('td', 'empty', 'No message matches these filters.');
      td.colSpan = 6;
      tr.append(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  // ---- CSV export: fetched with the token, saved from a Blob ----

  async function exportCsv() {
    clearFieldErrors();
    hideNotice();
    const p = formParams();
    if (!p) return;
    p.set('limit', EXPORT_LIMIT);
    p.set('format', 'csv');
    const button = $('#export');
    button.disabled = true;
    try {
      const r = await api('v1/messages?' + p.toString(), { raw: true });
      const blob = await r.blob();
      const url = URL.createObjectURL(blob);
      const a = el('a');
      a.href = url;
      a.download = 'herald-messages-' + new Date().toISOString().replace(/[:.]/g, '-') + '.csv';
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      searchError(e);
    } finally {
      button.disabled = false;
    }
  }

  // ---- one message ----

  function setText(sel, value, none) {
    $(sel).replaceChildren(orNone(value, none));
  }

  function closeMessage() {
    state.openId = null;
    $('#message').hidden = true;
    $('#m-html').srcdoc = '';
    $$('#results tr.selected').forEach((r) => r.classList.remove('selected'));
  }

  async function openMessage(id) {
    hideNotice();
    state.openId = id;
    $$('#results tbody tr').forEach((r) => r.classList.toggle('selected', r.dataset.id === id));
    saveHash();
    let m;
    try {
      m = await api('v1/messages/' + encodeURIComponent(id));
    } catch (e) {
      if (state.openId !== id) return;
      if (e instanceof ApiError && e.status === 404 && state.fresh.has(id)) {
        notice('Message ' + id + ' is queued but not in the Message Center yet: ' +
          'a worker records it when it takes it. Try again in a moment.', true);
      } else {
        notice(explain(e));
      }
      return;
    }
    if (state.openId !== id) return; // another row was opened meanwhile
    renderMessage(m);
  }

  function renderMessage(m) {
    const box = $('#message');
    const status = $('#m-status');
    status.className = 'badge';
    status.textContent = m.status || '?';
    if (m.status) status.classList.add('st-' + String(m.status).replace(/[^a-z]/g, ''));
    setText('#m-subject', m.subject, '(no subject)');
    setText('#m-id', m.id);
    $('#m-resend-of-row').previousElementSibling.hidden = !m.resend_of;
    $('#m-resend-of-row').hidden = !m.resend_of;
    $('#m-resend-of').textContent = m.resend_of || '';
    setText('#m-org', m.org);
    setText('#m-account', m.account);
    setText('#m-type', m.type);
    setText('#m-from', m.from ? (m.from_name ? m.from_name + ' <' + m.from + '>' : m.from) : null);
    setText('#m-sender', m.sender, 'not chosen yet');
    setText('#m-reply-to', m.reply_to);
    setText('#m-path', m.path);
    setText('#m-path-reason', m.path_reason, m.path ? '' : 'no path chosen yet');
    setText('#m-attempts', m.attempts);
    for (const [sel, key] of [['#m-created', 'created_at'], ['#m-updated', 'updated_at'],
      ['#m-sent', 'sent_at'], ['#m-next', 'next_attempt_at']])
      $(sel).replaceChildren(timeNode(m[key]));
    setText('#m-last-error', m.last_error);
    setText('#m-smtp-reply', m.smtp_reply);
    const att = Array.isArray(m.attachments) ? m.attachments : [];
    setText('#m-attachments', att.map((a) => (a.filename || '?') + ' (' +
      (a.content_type || '?') + ', ' + (a.size || 0) + ' bytes)').join(', '), 'none');
    setText('#m-meta', m.meta && typeof m.meta === 'object' && Object.keys(m.meta).length
      ? JSON.stringify(m.meta) : null, 'none');

    const rcpts = Array.isArray(m.recipients) ? m.recipients : [];
    $('#m-recipients tbody').replaceChildren(...rcpts.map((r) => {
      const tr = el('tr');
      const st = el('td');
      st.append(badge(r.status));
      const reply = el('td', 'reply');
      reply.append(orNone(r.reply));
      tr.append(el('td', null, r.email || ''), el('td', null, r.kind || ''), st, reply);
      return tr;
    }));

    const expired = m.body_expired === true;
    $('#m-text').replaceChildren(orNone(m.text, expired ? '(removed: body expired)' : '(no text part)'));
    const frame = $('#m-html');
    // a sandbox without allow-scripts (nor allow-same-origin): the HTML
    // runs no script and cannot reach this page
    frame.setAttribute('sandbox', '');
    if (typeof m.html === 'string' && m.html !== '') {
      frame.srcdoc = m.html;
      frame.hidden = false;
      $('#m-html-none').hidden = true;
    } else {
      frame.srcdoc = '';
      frame.hidden = true;
      $('#m-html-none').textContent = expired ? 'Removed: body expired.' : 'No HTML part.';
      $('#m-html-none').hidden = false;
    }

    $('#resend-result').replaceChildren();
    $('#resend-result').className = '';
    $('#resend').disabled = false;
    box.hidden = false;
    box.scrollTop = 0;
  }

  async function resend() {
    const id = state.openId;
    if (!id) return;
    const out = $('#resend-result');
    const to = $('#resend-to').value.split(/[\s,;]+/).filter(Boolean);
    out.className = '';
    out.textContent = 'Resending…';
    $('#resend').disabled = true;
    let r;
    try {
      r = await api('v1/messages/' + encodeURIComponent(id) + '/resend', {
        method: 'POST',
        json: to.length ? { to } : undefined,
      });
    } catch (e) {
      out.className = 'bad';
      const text = e instanceof ApiError && e.status === 400 ? 'Refused: ' + e.message
        : explain(e);
      if (text === null) return;
      out.textContent = text;
      $('#resend').disabled = false;
      return;
    }
    $('#resend').disabled = false;
    state.fresh.add(r.id);
    out.className = 'ok';
    const open = el('button', 'link', r.id);
    open.type = 'button';
    open.id = 'resend-new';
    open.dataset.id = r.id;
    open.title = 'Open the new message';
    open.addEventListener('click', () => openMessage(r.id));
    const again = el('button', 'link', 'search again');
    again.type = 'button';
    again.addEventListener('click', () => runSearch());
    out.replaceChildren(document.createTextNode('Resent as '), open,
      document.createTextNode(' — queued; it shows at the top of the list once a worker takes it ('),
      again, document.createTextNode(').'));
  }

  // ---- wiring ----

  function start() {
    $('#tz').textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';

    $('#login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('#login input[name=token]').value.trim();
      if (!t) return;
      setToken(t);
      $('#login input[name=token]').value = '';
      showApp();
      $('#search').elements.to.focus();
      resume();
    });
    $('#signout').addEventListener('click', () => signOut(''));
    $('#notice-close').addEventListener('click', hideNotice);

    const form = $('#search');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      runSearch();
    });
    form.addEventListener('input', (ev) => {
      const span = $$('#search [data-error-for]').find((s) => s.dataset.errorFor === ev.target.name);
      if (span) span.textContent = '';
      ev.target.classList.remove('invalid');
    });
    $('#search-clear').addEventListener('click', () => {
      form.reset();
      clearFieldErrors();
      form.elements.to.focus();
    });
    $('#next').addEventListener('click', () => {
      if (state.page + 1 < state.cursors.length) {
        state.page++;
        loadPage();
      }
    });
    $('#prev').addEventListener('click', () => {
      if (state.page > 0) {
        state.page--;
        loadPage();
      }
    });
    $('#export').addEventListener('click', exportCsv);

    const tbody = $('#results tbody');
    tbody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-id]');
      if (tr) openMessage(tr.dataset.id);
    });
    tbody.addEventListener('keydown', (ev) => {
      const tr = ev.target.closest('tr[data-id]');
      if (!tr) return;
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        openMessage(tr.dataset.id);
      } else if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        const next = ev.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) next.focus();
      }
    });
    $('#m-close').addEventListener('click', () => {
      const id = state.openId;
      closeMessage();
      saveHash();
      const tr = $$('#results tbody tr').find((r) => r.dataset.id === id);
      if (tr) tr.focus();
    });
    $('#m-resend-of').addEventListener('click', (ev) => {
      if (ev.target.textContent) openMessage(ev.target.textContent);
    });
    $('#resend').addEventListener('click', resend);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !$('#message').hidden) $('#m-close').click();
    });

    loadHash();
    if (!currentToken()) {
      showLogin('');
      return;
    }
    showApp();
    resume();
  }

  // After signing in: the search (or the page) and the message in view.
  function resume() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ''));
    if (state.params) loadPage();
    else if ([...h.keys()].some((k) => FILTERS.includes(k))) runSearch();
    const id = state.openId || h.get('id');
    if (id) openMessage(id);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
