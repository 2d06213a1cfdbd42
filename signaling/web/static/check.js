// The check page (/check#t=<token>): like the WebRTC "trickle ICE" sample, it gathers relay
// candidates against this Ferry's ICE servers, one TURN URL at a time, and shows for each
// (UDP, TCP, TLS on 443) whether a relay candidate came back and how long it took, the
// candidates as they trickle in, the ICE errors of each transport that failed, and a
// plain-text report for IT departments. A transport the server offers no URL for gets a row
// "not offered by this server", as in the consultation page's connection test.
// It keeps nothing: no cookies, no storage; the token stays in the fragment.
import { t, apply, setLang, currentLang } from './i18n.js';
import { probe, transportOf } from './conntest.js';

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get('t') || '';

// parse splits a turn:/turns: URL into transport, host and port (RFC 7065 defaults).
function parse(url) {
  const tr = transportOf(url);
  const m = /^turns?:(\[[^\]]+\]|[^:?]+)(?::(\d+))?/i.exec(url);
  if (!tr || !m) return null;
  return { url, transport: tr, host: m[1], port: m[2] ? Number(m[2]) : (tr === 'tls' ? 5349 : 3478) };
}

// cell is a table cell; cls 'url' lets a long URL or address break anywhere, 'nowrap'
// keeps a short label ("UDP 3478", "12 ms") on one line; other text wraps between words.
function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function label(p) { return `${p.transport.toUpperCase()} ${p.port}`; }

const TRANSPORTS = ['udp', 'tcp', 'tls'];

// absentRow is the row of a transport the server offers no URL for; its text follows the
// language through data-i18n.
function absentRow(tr) {
  const row = document.createElement('tr');
  row.dataset.testid = `row-${tr}-absent`;
  row.dataset.transport = tr;
  row.dataset.ok = 'absent';
  const res = cell(t('test.absent'), 'result');
  res.dataset.i18n = 'test.absent';
  res.dataset.ok = 'absent';
  row.append(cell(tr.toUpperCase(), 'nowrap'), cell('—'), res, cell('', 'ms'));
  return row;
}

let running = false;
let last = null; // {when, rows: [{p, res}], absent: ['tls'], error}

async function servers() {
  const res = await fetch('/v1/check/ice-servers', {
    headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
  });
  let body = {};
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
  return body.iceServers || [];
}

function addCandidate(p, c, ms) {
  const tr = document.createElement('tr');
  tr.dataset.type = c.type || '';
  // Chromium leaves relayProtocol empty for UDP relays; each probe has one URL, so it is the URL's.
  const proto = c.type === 'relay' ? (c.relayProtocol || p.transport) : '';
  tr.append(cell(`${ms} ms`, 'nowrap'), cell(p.url, 'url'), cell(c.type || ''), cell(proto),
    cell(c.address ? `${c.address}:${c.port}` : c.candidate, 'url'));
  $('cands').append(tr);
}

// A 701 that only says one local interface or address family could not reach the server:
// Chromium gathers on every interface and reports each one the server is not reached
// through ("Address not associated with the desired network interface").
const INTERFACE_ONLY = /network interface|address family/i;

// explaining returns the icecandidateerrors worth showing for a probe's result: none when a
// relay candidate came back (the transport works; errors from other interfaces would read as
// a problem); for a failure all of them, less the interface-only 701s when another error or
// the timeout explains the failure already.
function explaining(res) {
  if (res.ok) return [];
  const rest = res.errors.filter((e) => !(e.code === 701 && INTERFACE_ONLY.test(e.text)));
  return rest.length > 0 || res.timedOut ? rest : res.errors;
}

function addErrors(p, res) {
  for (const e of explaining(res)) {
    const li = document.createElement('li');
    li.textContent = `${e.ms} ms ${p.url}: ${e.code} ${e.text}`;
    $('errors').append(li);
  }
}

function showRow(row, p, res) {
  const result = row.querySelector('.result');
  row.dataset.ok = res ? String(res.ok) : '';
  result.dataset.ok = row.dataset.ok;
  if (!res) { result.textContent = t('check.running'); row.querySelector('.ms').textContent = ''; return; }
  if (res.ok) {
    row.dataset.ms = String(res.ms);
    // The address may break anywhere (an IPv6 one is long); the words around it stay whole.
    const addr = document.createElement('span');
    addr.className = 'url';
    addr.textContent = res.candidate.address ? `${res.candidate.address}:${res.candidate.port}` : '';
    const [before, after = ''] = t('check.ok', { addr: '\u0000' }).split('\u0000');
    result.replaceChildren(before, addr, after);
    row.querySelector('.ms').textContent = `${res.ms} ms`;
  } else {
    result.textContent = t('check.fail', { s: 6 });
    row.querySelector('.ms').textContent = '—';
  }
}

function verdict(rows) {
  const ok = rows.filter((r) => r.res.ok).map((r) => label(r.p));
  const v = $('verdict');
  if (ok.length === 0) {
    v.dataset.result = 'bad';
    v.textContent = t('check.bad');
  } else {
    const udp = rows.some((r) => r.res.ok && r.p.transport === 'udp');
    v.dataset.result = udp ? 'good' : 'streamonly';
    v.textContent = t(udp ? 'check.good' : 'check.streamonly', { list: ok.join(', ') });
  }
  document.body.dataset.state = 'done';
}

function report() {
  const lines = [t('check.report.head', { when: last.when.toISOString() }), location.origin];
  if (last.error) lines.push(t('check.error', { msg: last.error }));
  for (const { p, res } of last.rows) {
    const what = res.ok ? t('check.report.ok', { ms: res.ms }) : t('check.report.fail');
    lines.push(`${label(p).padEnd(9)} ${p.url}  ${what}`);
    for (const e of explaining(res)) lines.push(`          ${t('check.report.err')} ${e.code} ${e.text}`);
  }
  for (const tr of last.absent) lines.push(`${tr.toUpperCase().padEnd(9)} ${t('test.absent')}`);
  if (last.rows.length > 0) lines.push($('verdict').textContent);
  $('report').textContent = lines.join('\n');
}

async function runAll() {
  if (running) return;
  running = true;
  $('again').disabled = true;
  document.body.dataset.state = 'running';
  for (const id of ['rows', 'cands', 'errors']) $(id).replaceChildren();
  const v = $('verdict');
  v.textContent = '';
  delete v.dataset.result;
  last = { when: new Date(), rows: [], absent: [], error: '' };
  try {
    if (!token) throw new Error(t('check.notoken'));
    const list = [];
    for (const s of await servers()) {
      for (const u of [].concat(s.urls)) {
        const p = parse(u);
        if (p) list.push({ s, p });
      }
    }
    if (list.length === 0) throw new Error(t('check.nourls'));
    const rows = list.map(({ p }) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = `row-${p.transport}-${p.port}`;
      tr.dataset.transport = p.transport;
      tr.dataset.port = String(p.port);
      const res = cell('', 'result');
      const ms = cell('', 'ms');
      tr.append(cell(label(p), 'nowrap'), cell(p.url, 'url'), res, ms);
      $('rows').append(tr);
      showRow(tr, p, null);
      return tr;
    });
    last.absent = TRANSPORTS.filter((tr) => !list.some(({ p }) => p.transport === tr));
    for (const tr of last.absent) $('rows').append(absentRow(tr));
    last.rows = await Promise.all(list.map(async ({ s, p }, i) => {
      const res = await probe(s, [p.url], { onCandidate: (c, ms) => addCandidate(p, c, ms) });
      showRow(rows[i], p, res);
      addErrors(p, res);
      return { p, res };
    }));
    verdict(last.rows);
  } catch (err) {
    last.error = err.message;
    v.dataset.result = 'error';
    v.textContent = t('check.error', { msg: err.message });
    document.body.dataset.state = 'error';
  } finally {
    report();
    running = false;
    $('again').disabled = false;
  }
}

function switchLang() {
  setLang(currentLang() === 'de' ? 'en' : 'de');
  applyTexts();
  if (last && !running) {
    last.rows.forEach(({ p, res }) => showRow(document.querySelector(`[data-testid="row-${p.transport}-${p.port}"]`), p, res));
    if (last.rows.length > 0) verdict(last.rows);
    report();
  }
}

function applyTexts() {
  apply();
  $('lang').textContent = t('lang.other');
  $('lang').setAttribute('lang', currentLang() === 'de' ? 'en' : 'de');
}

applyTexts();
$('lang').addEventListener('click', switchLang);
$('again').addEventListener('click', runAll);
runAll();
