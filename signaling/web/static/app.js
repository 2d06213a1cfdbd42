// The consultation page: before joining (devices, level, connection test), the waiting
// room, the call, chat and files. Signaling goes over Ferry's ferry.v1 WebSocket; media,
// chat and files go peer to peer. Nothing is stored: no cookies, no storage APIs.
import { t, apply, setLang, currentLang, formatSize } from './i18n.js';
import { Signal } from './signal.js';
import { LocalMedia } from './media.js';
import { Peer, isPolite } from './peer.js';
import * as conntest from './conntest.js';
import { $, el, announce, peerLabel, Tile, addChat, addNote, TransferView } from './ui.js';

const fileLimit = Number(document.body.dataset.maxFileBytes) || 100 * 1024 * 1024;
const room = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
const token = new URLSearchParams(location.hash.slice(1)).get('t') || '';

// claimsOf reads the token's claims for display (the server verifies the token).
function claimsOf(tok) {
  try {
    const b64 = tok.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

const claims = claimsOf(token);
const media = new LocalMedia();
const S = {
  view: 'prejoin', me: '', role: claims.role === 'host' ? 'host' : 'guest', signal: null, session: false,
  iceServers: [], relayOnly: false, roster: new Map(), peers: new Map(), tiles: new Map(), knocks: new Map(),
  muted: false, screen: null, locked: new Set(), ended: false,
};

// ---- views ----

const VIEW_PANELS = { prejoin: ['prejoin'], waiting: ['waiting'], call: ['chat'], ended: ['ended'] };

function setView(view) {
  S.view = view;
  document.body.dataset.view = view;
  for (const id of ['prejoin', 'waiting', 'chat', 'ended']) $(id).hidden = !VIEW_PANELS[view].includes(id);
  const inRoom = view === 'waiting' || view === 'call';
  $('host-panel').hidden = !(S.role === 'host' && view === 'call');
  $('join').hidden = view !== 'prejoin';
  for (const id of ['mute', 'camera', 'share']) $(id).hidden = view !== 'call';
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) $('share').hidden = true; // phones
  $('hangup').hidden = !inRoom;
  $('end-all').hidden = !(S.role === 'host' && view === 'call');
  $('relay-only').closest('label').hidden = view === 'ended';
  $('self').hidden = view === 'ended';
  showMediaBox();
  if (view !== 'call') $('conn-state').textContent = view === 'waiting' ? '' : $('conn-state').textContent;
  const heading = { prejoin: 'prejoin-heading', waiting: 'waiting-heading', call: 'stage-heading', ended: 'ended-heading' }[view];
  $(heading).tabIndex = -1;
  if (document.activeElement === document.body || !document.activeElement || document.activeElement.hidden) $(heading).focus({ preventScroll: true });
}

function endWith(key, params) {
  if (S.ended) return;
  S.ended = true;
  closeAllPeers();
  stopShare();
  media.stop();
  showPreview();
  if (S.signal) S.signal.leave();
  $('ended-text').textContent = t(key, params);
  $('ended-text').dataset.reason = key;
  setView('ended');
  announce(t(key, params));
}

// ---- local media ----

function showPreview() {
  const v = $('local-video');
  const s = media.stream();
  v.srcObject = s.getTracks().length ? s : null;
  $('self-off').hidden = !!media.video;
}

// showMediaBox shows the camera/microphone status before joining, and later only problems.
function showMediaBox() {
  const problem = !!(media.errors.audio || media.errors.video);
  $('media-box').hidden = S.view === 'ended' || (S.view !== 'prejoin' && !problem);
}

function showMediaStatus() {
  const lines = [];
  for (const kind of ['audio', 'video']) if (media.errors[kind]) lines.push(t(`media.${kind}.${media.errors[kind]}`));
  if (!window.isSecureContext) lines.unshift(t('media.insecure'));
  if (!media.audio && !media.video && lines.length) lines.push(t('media.none'));
  const box = $('media-status');
  box.textContent = lines.length ? lines.join(' ') : (media.audio || media.video ? t('media.ok') : '');
  box.classList.toggle('error', lines.length > 0);
  box.dataset.audio = media.errors.audio || 'ok';
  box.dataset.video = media.errors.video || 'ok';
  $('media-retry').hidden = !media.errors.audio && !media.errors.video;
  showMediaBox();
}

async function fillDevices() {
  const devs = await media.devices();
  const fill = (select, kind, current) => {
    const list = devs.filter((d) => d.kind === kind);
    select.replaceChildren(...list.map((d, i) => el('option', { value: d.deviceId }, d.label || `${kind} ${i + 1}`)));
    if (current) select.value = current;
    return list.length;
  };
  fill($('camera-select'), 'videoinput', media.video && media.video.getSettings().deviceId);
  fill($('mic-select'), 'audioinput', media.audio && media.audio.getSettings().deviceId);
  const canPick = typeof HTMLMediaElement.prototype.setSinkId === 'function';
  $('speaker-field').hidden = !canPick || fill($('speaker-select'), 'audiooutput', '') === 0;
}

async function mediaChanged() {
  showPreview();
  showMediaStatus();
  if (media.audio) media.audio.enabled = !S.muted;
  if (!media.meter && media.audio) media.startMeter($('mic-level'));
  for (const p of S.peers.values()) p.updateLocal();
  await fillDevices();
}

async function retryMedia() {
  await media.acquire();
  if (media.meter && media.audio) media.startMeter($('mic-level'));
  await mediaChanged();
}

// ---- connection test ----

// What the connection test's refusals (the WebSocket's 4406, 4411, 4410) say.
const REFUSED_TEXT = { denied: 'ended.denied', link_used: 'ended.used', ended: 'ended.ended' };

async function runConnTest() {
  const rows = { udp: 'test-udp', tcp: 'test-tcp', tls: 'test-tls' };
  for (const id of Object.values(rows)) { const r = document.querySelector(`[data-testid="${id}"]`); r.textContent = t('test.running'); delete r.dataset.ok; }
  const verdict = $('conn-verdict');
  verdict.textContent = '';
  try {
    const res = await fetch(`/v1/rooms/${encodeURIComponent(room)}/ice-servers`, {
      headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    });
    const body = await res.json();
    const refused = body.error && REFUSED_TEXT[body.error.code];
    if (refused) { endWith(refused); return; } // the room refuses this link: joining would too
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    const out = await conntest.run(body.iceServers || []);
    for (const [tr, id] of Object.entries(rows)) {
      const r = document.querySelector(`[data-testid="${id}"]`);
      r.textContent = t(out[tr] === null ? 'test.absent' : out[tr] ? 'test.ok' : 'test.fail');
      r.dataset.ok = out[tr] === null ? 'absent' : String(out[tr]);
    }
    const key = out.udp || out.tcp ? 'test.good' : out.tls ? 'test.tlsonly' : 'test.bad';
    verdict.textContent = t(key);
    verdict.dataset.result = key;
  } catch (err) {
    verdict.textContent = t('test.error', { msg: err.message });
    verdict.dataset.result = 'error';
  }
}

// ---- peers ----

function rtcConfig() {
  return { iceServers: S.iceServers, iceTransportPolicy: S.relayOnly ? 'relay' : 'all', bundlePolicy: 'max-bundle' };
}

function playMedia(v) {
  const p = v.play();
  if (!p) return;
  p.then(() => { S.locked.delete(v); $('start-media').hidden = S.locked.size === 0; })
    .catch((err) => {
      if (err.name === 'NotAllowedError') { S.locked.add(v); $('start-media').hidden = false; }
    });
}

function peerEvents(tile) {
  return {
    track(peer) {
      if (tile.video.srcObject !== peer.remote) { tile.video.srcObject = peer.remote; playMedia(tile.video); }
      this.media(peer);
    },
    media(peer) {
      const vt = peer.remote.getVideoTracks()[0];
      tile.off.hidden = !!(peer.remoteMedia.video && vt && !vt.muted);
      tile.root.dataset.camera = tile.off.hidden ? 'on' : 'off';
      tile.root.dataset.mic = peer.remoteMedia.audio ? 'on' : 'off';
    },
    screen(peer, track) {
      const v = $('remote-screen');
      if (track) {
        if (!v.srcObject || v.srcObject.getVideoTracks()[0] !== track) { v.srcObject = new MediaStream([track]); playMedia(v); }
        $('screen-tile').hidden = false;
        $('screen-tile').dataset.peerId = peer.id;
      } else if ($('screen-tile').dataset.peerId === peer.id) {
        $('screen-tile').hidden = true;
        v.srcObject = null;
      }
    },
    state(peer) {
      const s = peer.pc.connectionState;
      tile.badge.textContent = s === 'connected' ? '' : t(s === 'new' || s === 'connecting' ? 'state.connecting' : 'state.reconnecting');
      tile.root.dataset.state = s;
      updateCallState();
    },
    chat(peer, text, ts) { addChat(peerLabel(peer), text, ts); },
  };
}

function fileUI() {
  const views = new Map();
  return {
    add(tr) { views.set(tr.id, new TransferView(tr)); },
    update(tr) { const v = views.get(tr.id); if (v) v.update(); },
    notice(key, p) { addNote(t(key, { name: p.name, size: formatSize(p.size), limit: formatSize(p.limit) })); },
  };
}

function ensurePeer(info) {
  if (S.peers.has(info.id) || info.id === S.me) return S.peers.get(info.id);
  S.roster.set(info.id, info);
  const tile = new Tile(info);
  const peer = new Peer({
    id: info.id, role: info.role, name: info.name, polite: isPolite(S.me, S.role, info.id, info.role),
    config: rtcConfig(), media, fileLimit, fileUI: fileUI(), ev: null,
    send: (m) => S.signal.send({ ...m, to: info.id }),
  });
  peer.ev = peerEvents(tile);
  S.peers.set(info.id, peer);
  S.tiles.set(info.id, tile);
  if (S.screen) peer.share(S.screen);
  updateCallState();
  return peer;
}

function closePeer(id) {
  const p = S.peers.get(id);
  if (p) p.close();
  S.peers.delete(id);
  const tile = S.tiles.get(id);
  if (tile) tile.remove();
  S.tiles.delete(id);
  if ($('screen-tile').dataset.peerId === id) { $('screen-tile').hidden = true; $('remote-screen').srcObject = null; }
  updateCallState();
}

function closeAllPeers() {
  for (const id of [...S.peers.keys()]) closePeer(id);
  S.roster.clear();
  renderParticipants();
}

function updateCallState() {
  if (S.view !== 'call') return;
  const peers = [...S.peers.values()];
  let key = 'state.waitpeer';
  if (S.signal && !S.signal.isOpen()) key = 'state.reconnecting';
  else if (peers.some((p) => p.connected())) key = 'state.connected';
  else if (peers.some((p) => ['disconnected', 'failed'].includes(p.pc.connectionState))) key = 'state.reconnecting';
  else if (peers.length) key = 'state.connecting';
  const box = $('conn-state');
  if (box.dataset.state !== key) { box.textContent = t(key); box.dataset.state = key; }
}

async function updatePath() {
  const box = $('conn-path');
  const peer = [...S.peers.values()].find((p) => p.connected());
  if (!peer) { box.textContent = ''; box.dataset.path = ''; return; }
  try {
    const p = await peer.path();
    if (!p) return;
    const relayed = p.local === 'relay' || p.remote === 'relay';
    box.dataset.path = relayed ? 'relay' : 'direct';
    box.dataset.transport = p.local === 'relay' ? p.relayProtocol : '';
    box.textContent = !relayed ? t('path.direct') : p.local === 'relay'
      ? t('path.relay', { transport: { udp: 'UDP', tcp: 'TCP', tls: 'TLS' }[p.relayProtocol] || p.relayProtocol.toUpperCase() })
      : t('path.relayremote');
  } catch { /* closed meanwhile */ }
}

// ---- host: waiting room and participants ----

function renderKnocks() {
  const list = $('knocks');
  list.replaceChildren();
  for (const k of S.knocks.values()) {
    const li = el('li', { 'data-testid': 'knock', 'data-peer-id': k.id });
    li.append(el('span', { class: 'name' }, k.name || t('host.noname')));
    for (const [action, label] of [['admit', 'admit'], ['deny', 'deny']]) {
      const b = el('button', { type: 'button', 'data-testid': action, class: action === 'admit' ? 'primary' : '' }, t(label));
      b.addEventListener('click', () => S.signal.send({ type: action, id: k.id }));
      li.append(b);
    }
    list.append(li);
  }
  $('knock-empty').hidden = S.knocks.size > 0;
}

function renderParticipants() {
  const list = $('participants');
  list.replaceChildren();
  if (S.role !== 'host') return;
  for (const p of S.roster.values()) {
    if (p.role !== 'guest') continue;
    const li = el('li', { 'data-testid': 'participant', 'data-peer-id': p.id });
    li.append(el('span', { class: 'name' }, peerLabel(p)));
    for (const [action, label] of [['return', 'return'], ['deny', 'remove']]) {
      const b = el('button', { type: 'button', 'data-testid': action }, t(label));
      b.addEventListener('click', () => S.signal.send({ type: action, id: p.id }));
      li.append(b);
    }
    list.append(li);
  }
}

// ---- room messages ----

function admittedTo(peers, servers) {
  S.iceServers = servers || S.iceServers;
  setView('call');
  for (const p of peers) ensurePeer(p);
  renderParticipants();
}

function onWelcome(m) {
  const fresh = !m.reconnected || S.peers.size === 0;
  if (!m.reconnected && S.session) closeAllPeers(); // the room forgot us: start over
  S.session = true;
  S.me = m.you;
  S.role = m.role;
  S.knocks.clear();
  renderKnocks();
  const wanted = $('name-input').value.trim();
  if (wanted && !m.name && !claims.name) S.signal.send({ type: 'name', name: wanted });
  if (m.state === 'waiting') {
    closeAllPeers();
    setView('waiting');
    return;
  }
  S.iceServers = m.iceServers || [];
  const current = new Set(m.peers.map((p) => p.id));
  for (const id of [...S.peers.keys()]) if (!current.has(id)) closePeer(id);
  for (const p of m.peers) {
    if (m.reconnected && fresh) S.signal.send({ type: 'bye', to: p.id }); // a reload: their old connection is useless
    ensurePeer(p);
  }
  for (const p of S.peers.values()) { p.setICE(S.iceServers, S.relayOnly); if (m.reconnected) p.resync(); }
  admittedTo(m.peers);
}

const handlers = {
  welcome: onWelcome,
  knock(m) {
    if (S.role !== 'host') return;
    const isNew = !S.knocks.has(m.id);
    S.knocks.set(m.id, { id: m.id, name: m.name || '' });
    renderKnocks();
    if (isNew) announce(t('note.knock', { name: m.name || t('host.noname') }));
  },
  admitted(m) { announce(t('note.admitted')); admittedTo(m.peers, m.iceServers); },
  returned() { stopShare(); closeAllPeers(); setView('waiting'); announce(t('note.returned')); },
  denied() { endWith('ended.denied'); },
  ended() { endWith('ended.ended'); },
  'peer-joined'(m) {
    S.knocks.delete(m.id);
    renderKnocks();
    S.roster.set(m.id, { id: m.id, role: m.role, name: m.name });
    ensurePeer(m);
    renderParticipants();
    if (S.view === 'call') addNote(t('note.joined', { name: peerLabel(m) }));
  },
  'peer-left'(m) {
    S.knocks.delete(m.id);
    renderKnocks();
    const known = S.roster.has(m.id);
    S.roster.delete(m.id);
    closePeer(m.id);
    renderParticipants();
    if (known && S.view === 'call') addNote(t(S.role === 'guest' && m.role === 'host' ? 'note.hostleft' : 'note.left', { name: peerLabel(m) }));
  },
  'peer-reconnected'(m) { const p = S.peers.get(m.id); if (p) p.resync(); },
  'peer-name'(m) {
    const info = S.roster.get(m.id);
    if (info) info.name = m.name;
    const p = S.peers.get(m.id);
    if (p) p.name = m.name;
    const tile = S.tiles.get(m.id);
    if (tile) tile.rename({ ...info, name: m.name });
    renderParticipants();
  },
  'ice-servers'(m) {
    S.iceServers = m.iceServers;
    for (const p of S.peers.values()) p.setICE(S.iceServers, S.relayOnly);
  },
  bye(m) {
    closePeer(m.from);
    const info = S.roster.get(m.from);
    if (info && S.view === 'call') ensurePeer(info); // it starts over (a reload); the impolite side offers
  },
  error(m) {
    // A message to a participant who has just left crossed its peer-left: nothing is lost.
    if (m.code === 'no_such_peer' && m.to && !S.peers.has(m.to)) return;
    console.warn('ferry: room refused a message', m.code, m.ref);
  },
};

function onMessage(m) {
  if (handlers[m.type]) { handlers[m.type](m); return; }
  if (['offer', 'answer', 'candidate', 'restart'].includes(m.type) && m.from) {
    let peer = S.peers.get(m.from);
    if (!peer && m.type === 'offer' && S.view === 'call') peer = ensurePeer(S.roster.get(m.from) || { id: m.from, role: S.role === 'host' ? 'guest' : 'host' });
    if (peer) peer.onSignal(m);
  }
}

const CLOSE_TEXT = { 4406: 'ended.denied', 4410: 'ended.ended', 4402: 'ended.expired', 4404: 'ended.notyet', 4401: 'ended.invalid',
  4400: 'ended.invalid', 4403: 'ended.invalid', 4411: 'ended.used', 4413: 'ended.full', 4409: 'ended.replaced', 1000: 'ended.left' };

function onClosed(code, reason) {
  const when = (/\d{4}-\d\d-\d\dT[\d:]+Z/.exec(reason || '') || [''])[0];
  endWith(CLOSE_TEXT[code] || 'ended.busy', { when: when ? new Date(when).toLocaleString(currentLang()) : '' });
}

function onSignalState(s) {
  const banner = $('banner');
  banner.dataset.testid = 'banner';
  if (s === 'reconnecting') {
    banner.textContent = t(navigator.onLine === false ? 'banner.offline' : 'banner.reconnecting');
    banner.dataset.state = 'reconnecting';
    banner.hidden = false;
  } else {
    banner.hidden = true;
    banner.dataset.state = s;
  }
  updateCallState();
}

// ---- controls ----

function join() {
  $('join').disabled = true;
  S.signal = new Signal(room, token, { message: onMessage, state: onSignalState, closed: onClosed });
  S.signal.connect();
}

function hangup() {
  if (S.signal) for (const id of S.peers.keys()) S.signal.send({ type: 'bye', to: id });
  endWith('ended.left');
}

function toggleMute() {
  S.muted = !S.muted;
  media.setMuted(S.muted);
  $('mute').setAttribute('aria-pressed', String(S.muted));
  $('mute').dataset.i18n = S.muted ? 'unmute' : 'mute';
  $('mute').textContent = t($('mute').dataset.i18n);
  for (const p of S.peers.values()) p.sendMediaState();
}

async function toggleCamera() {
  const off = !media.cameraOff;
  await media.setCamera(!off);
  $('camera').setAttribute('aria-pressed', String(off));
  $('camera').dataset.i18n = off ? 'camera.on' : 'camera.off';
  $('camera').textContent = t($('camera').dataset.i18n);
  await mediaChanged();
}

function stopShare() {
  if (!S.screen) return;
  const track = S.screen;
  S.screen = null;
  track.onended = null;
  track.stop();
  for (const p of S.peers.values()) p.share(null);
  $('share').setAttribute('aria-pressed', 'false');
  $('share').dataset.i18n = 'share';
  $('share').textContent = t('share');
}

async function toggleShare() {
  if (S.screen) { stopShare(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (err) {
    if (err.name !== 'NotAllowedError') addNote(err.message);
    return;
  }
  const track = stream.getVideoTracks()[0];
  if ('contentHint' in track) track.contentHint = 'detail';
  S.screen = track;
  track.onended = stopShare;
  for (const p of S.peers.values()) p.share(track);
  $('share').setAttribute('aria-pressed', 'true');
  $('share').dataset.i18n = 'share.stop';
  $('share').textContent = t('share.stop');
}

function sendChat(ev) {
  ev.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  let sent = false;
  for (const p of S.peers.values()) sent = p.sendChat(text) || sent;
  if (!sent) { addNote(t('file.nopeer')); return; }
  addChat(t('chat.me'), text, Date.now(), 'mine');
  input.value = '';
}

function sendFiles() {
  const input = $('file-input');
  const peers = [...S.peers.values()].filter((p) => p.files.dc.readyState === 'open');
  if (peers.length === 0) { addNote(t('file.nopeer')); input.value = ''; return; }
  for (const f of input.files) for (const p of peers) p.files.send(f);
  input.value = '';
}

function switchLang() {
  setLang(currentLang() === 'de' ? 'en' : 'de');
  translate();
}

function translate() {
  apply();
  $('lang').textContent = t('lang.other');
  $('lang').setAttribute('lang', currentLang() === 'de' ? 'en' : 'de');
  $('file-limit').textContent = t('file.limit', { size: formatSize(fileLimit) });
  const who = claims.name && S.role === 'host' ? t('role.hostnamed', { name: claims.name }) : t(S.role === 'host' ? 'role.host' : 'role.guest');
  $('who').textContent = who;
  if (media.audio || media.video || media.errors.audio || media.errors.video) showMediaStatus();
  renderKnocks();
  renderParticipants();
  if ($('conn-state').dataset.state) $('conn-state').textContent = t($('conn-state').dataset.state);
}

function wire() {
  $('lang').addEventListener('click', switchLang);
  $('join').addEventListener('click', join);
  $('hangup').addEventListener('click', hangup);
  $('end-all').addEventListener('click', () => S.signal && S.signal.send({ type: 'end' }));
  $('mute').addEventListener('click', toggleMute);
  $('camera').addEventListener('click', toggleCamera);
  $('share').addEventListener('click', toggleShare);
  $('media-retry').addEventListener('click', retryMedia);
  $('conn-test').addEventListener('click', runConnTest);
  $('rejoin').addEventListener('click', () => location.reload());
  $('chat-form').addEventListener('submit', sendChat);
  $('file-input').addEventListener('change', sendFiles);
  $('relay-only').addEventListener('change', (ev) => {
    S.relayOnly = ev.target.checked;
    for (const p of S.peers.values()) p.setICE(S.iceServers, S.relayOnly);
  });
  $('camera-select').addEventListener('change', async (ev) => { await media.switchDevice('video', ev.target.value); await mediaChanged(); });
  $('mic-select').addEventListener('change', async (ev) => { await media.switchDevice('audio', ev.target.value); media.startMeter($('mic-level')); await mediaChanged(); });
  $('speaker-select').addEventListener('change', (ev) => {
    for (const v of document.querySelectorAll('video')) if (v.setSinkId) v.setSinkId(ev.target.value).catch(() => {});
  });
  $('start-media').addEventListener('click', () => { for (const v of [...S.locked]) playMedia(v); });
  if (navigator.mediaDevices) navigator.mediaDevices.addEventListener('devicechange', fillDevices);
  addEventListener('online', () => { for (const p of S.peers.values()) p.restart(); });
  if (navigator.connection) navigator.connection.addEventListener('change', () => { for (const p of S.peers.values()) p.restart(); });
  setInterval(() => { updatePath(); updateCallState(); }, 2000);
}

async function main() {
  wire();
  S.relayOnly = $('relay-only').checked;
  $('name-field').hidden = S.role === 'host' || !!claims.name;
  translate();
  setView('prejoin');
  if (!token || !room) { endWith('ended.notoken'); return; }
  await media.acquire();
  if (media.audio) media.startMeter($('mic-level'));
  showPreview();
  showMediaStatus();
  await fillDevices();
  runConnTest();
}

main();
