// DOM helpers of the page. Every string from another participant (names, chat, file
// names) goes in as text (textContent), never as HTML.
import { t, formatSize } from './i18n.js';

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

export function announce(text) {
  $('announce').textContent = '';
  setTimeout(() => { $('announce').textContent = text; }, 50);
}

// peerLabel names a participant: its display name, else its role.
export function peerLabel(p) {
  return p.name || t(p.role === 'host' ? 'peer.host' : 'peer.guest');
}

// Tile is a remote participant's video with its camera-off placeholder and state badge.
export class Tile {
  constructor(peer) {
    this.video = el('video', { autoplay: '', playsinline: '', 'data-testid': 'remote-video', 'data-peer-id': peer.id });
    this.off = el('div', { class: 'placeholder', 'data-testid': 'camera-off' });
    this.offText = el('span', {}, t('camera.offpeer'));
    this.off.append(this.offText);
    this.caption = el('figcaption', {}, peerLabel(peer));
    this.badge = el('span', { class: 'state', 'data-testid': 'peer-state' });
    this.root = el('figure', { class: 'tile remote', 'data-peer-id': peer.id });
    this.root.append(this.video, this.off, this.caption, this.badge);
    $('remotes').append(this.root);
  }

  rename(peer) { this.caption.textContent = peerLabel(peer); }

  remove() {
    this.video.srcObject = null;
    this.root.remove();
  }
}

export function addChat(who, text, ts, cls) {
  const li = el('li', { class: cls || '' });
  const time = new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  li.append(el('span', { class: 'meta' }, who ? `${who} · ${time}` : time));
  li.append(el('span', { class: 'text' }, text));
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

export function addNote(text) {
  addChat('', text, Date.now(), 'note');
}

// TransferView is one file in the transfers list: name, progress bar, state, cancel, and
// the download link once received. Updates are batched (at most ten per second).
export class TransferView {
  constructor(tr) {
    this.tr = tr;
    this.name = el('span', { class: 'name' }, `${tr.name} (${formatSize(tr.size)})`);
    this.bar = el('progress', { max: '100', value: '0', 'data-testid': 'file-progress' });
    this.status = el('span', { class: 'status', 'data-testid': 'file-status' });
    this.cancel = el('button', { type: 'button', 'data-testid': 'file-cancel' }, t('file.cancel'));
    this.cancel.addEventListener('click', () => tr.cancel());
    this.root = el('li', { 'data-testid': 'transfer', 'data-dir': tr.dir, 'data-id': tr.id });
    this.bar.setAttribute('aria-label', tr.name);
    this.root.append(this.name, this.bar, this.status, this.cancel);
    $('transfers').append(this.root);
    this.pending = null;
    this.render();
  }

  update() {
    const final = !['queued', 'active', 'sent'].includes(this.tr.state);
    if (final) { clearTimeout(this.pending); this.pending = null; this.render(); return; }
    if (!this.pending) this.pending = setTimeout(() => { this.pending = null; this.render(); }, 100);
  }

  render() {
    const tr = this.tr;
    const pct = tr.size > 0 ? Math.floor((tr.done / tr.size) * 100) : 100;
    this.bar.value = tr.state === 'done' ? 100 : Math.min(pct, 99);
    this.root.dataset.state = tr.state;
    const labels = {
      queued: 'file.sending', active: tr.dir === 'out' ? 'file.sending' : 'file.receiving', sent: 'file.sending',
      done: tr.dir === 'out' ? 'file.done' : 'file.received', cancelled: 'file.cancelled', failed: 'file.failed',
    };
    if (tr.state === 'toolarge') {
      this.status.textContent = t(tr.dir === 'out' ? 'file.toolarge' : 'file.toolargepeer',
        { name: tr.name, size: formatSize(tr.size), limit: formatSize(Number(document.body.dataset.maxFileBytes)) });
      this.status.classList.add('error');
    } else {
      this.status.textContent = `${t(labels[tr.state])} ${this.bar.value} %`;
    }
    this.cancel.hidden = !['queued', 'active', 'sent'].includes(tr.state);
    if (tr.state === 'done' && tr.url && !this.link) {
      this.link = el('a', { href: tr.url, download: tr.name.replace(/[\\/:*?"<>|\u0000-\u001f]/g, '_') || 'file', 'data-testid': 'file-download' },
        t('file.download', { name: tr.name }));
      this.root.append(this.link);
    }
  }
}
