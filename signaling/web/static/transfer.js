// File transfer over an RTCDataChannel of its own ("file"), so chat never queues behind it.
// Control messages are JSON text; the file's bytes follow as binary chunks of at most
// 16 KiB (and never above the peer's max-message-size), sent only while the channel's
// buffer is under a high-water mark. The receiver keeps the bytes as Blobs, not as one
// growing buffer, and offers them as a download link. One file at a time per direction.

const CHUNK = 16384;         // bytes per send(): safe between every browser (RFC 8841 default 64 KiB)
const BLOCK = 256 * 1024;    // bytes read from the file at once
const HIGH = 1024 * 1024;    // do not send while more than this is buffered
const LOW = 256 * 1024;      // bufferedamountlow fires here
const PART = 8 * 1024 * 1024; // received bytes gathered into one Blob

let counter = 0;

function newID() {
  counter++;
  const r = new Uint32Array(2);
  crypto.getRandomValues(r);
  return `${r[0].toString(36)}${r[1].toString(36)}-${counter}`;
}

export class FileChannel {
  // ui: add(transfer), update(transfer), notice(key, params). limit: the largest file in bytes.
  constructor(dc, pc, limit, ui) {
    this.dc = dc;
    this.pc = pc;
    this.limit = limit;
    this.ui = ui;
    this.outgoing = [];
    this.sending = null;
    this.receiving = null;
    this.draining = null; // id of an incoming transfer we cancelled: drop its chunks
    this.mine = new Map();  // outgoing transfers by id
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = LOW;
    dc.addEventListener('message', (ev) => this.onMessage(ev.data));
    dc.addEventListener('open', () => this.pump());
    dc.addEventListener('close', () => this.abortAll());
  }

  // send queues file for sending; a file over the limit is refused before anything is sent
  // (the other side hears of it, so both can say why).
  send(file) {
    const tr = { id: newID(), dir: 'out', name: file.name, size: file.size, mime: file.type, done: 0, state: 'queued', file };
    tr.cancel = () => this.cancelOut(tr, true);
    this.mine.set(tr.id, tr);
    if (file.size > this.limit) {
      tr.state = 'toolarge';
      this.ui.add(tr);
      this.control({ type: 'too-large', id: tr.id, name: file.name, size: file.size });
      return tr;
    }
    this.ui.add(tr);
    this.outgoing.push(tr);
    this.pump();
    return tr;
  }

  control(m) {
    if (this.dc.readyState === 'open') this.dc.send(JSON.stringify(m));
  }

  pump() {
    if (this.sending || this.dc.readyState !== 'open') return;
    const tr = this.outgoing.shift();
    if (!tr) return;
    this.sending = tr;
    this.run(tr).catch((err) => {
      if (tr.state === 'active') { tr.state = 'failed'; tr.error = String(err); this.ui.update(tr); }
    }).finally(() => {
      this.sending = null;
      this.pump();
    });
  }

  chunkSize() {
    const max = this.pc.sctp && this.pc.sctp.maxMessageSize;
    return Math.max(1024, Math.min(CHUNK, max || CHUNK));
  }

  // room waits until the channel's buffer has space for another chunk.
  room(tr, chunk) {
    const dc = this.dc;
    if (dc.bufferedAmount + chunk <= HIGH) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearInterval(timer); dc.removeEventListener('bufferedamountlow', done); dc.removeEventListener('close', done); resolve(); };
      dc.addEventListener('bufferedamountlow', done);
      dc.addEventListener('close', done);
      tr.wake = done;
      // A safety net only: bufferedamountlow normally fires first.
      const timer = setInterval(() => { if (dc.bufferedAmount + chunk <= HIGH || tr.state !== 'active') done(); }, 250);
    });
  }

  async run(tr) {
    const dc = this.dc;
    tr.state = 'active';
    this.ui.update(tr);
    dc.send(JSON.stringify({ type: 'offer', id: tr.id, name: tr.name, size: tr.size, mime: tr.mime }));
    const chunk = this.chunkSize();
    let off = 0;
    while (off < tr.size && tr.state === 'active') {
      const block = await tr.file.slice(off, off + BLOCK).arrayBuffer();
      for (let i = 0; i < block.byteLength && tr.state === 'active'; i += chunk) {
        await this.room(tr, chunk);
        if (tr.state !== 'active' || dc.readyState !== 'open') break;
        const n = Math.min(chunk, block.byteLength - i);
        dc.send(new Uint8Array(block, i, n));
        off += n;
        tr.done = Math.max(0, off - dc.bufferedAmount);
        this.ui.update(tr);
      }
    }
    if (tr.state !== 'active') return;
    if (dc.readyState !== 'open') { tr.state = 'failed'; this.ui.update(tr); return; }
    dc.send(JSON.stringify({ type: 'end', id: tr.id }));
    tr.state = 'sent'; // 'done' once the receiver confirms
    this.ui.update(tr);
  }

  cancelOut(tr, tell) {
    if (!['queued', 'active', 'sent'].includes(tr.state)) return;
    tr.state = 'cancelled';
    this.outgoing = this.outgoing.filter((x) => x !== tr);
    if (tr.wake) tr.wake();
    if (tell) this.control({ type: 'cancel', id: tr.id });
    tr.file = null;
    this.ui.update(tr);
  }

  cancelIn(tr, tell) {
    if (tr.state !== 'active') return;
    tr.state = 'cancelled';
    tr.parts = tr.blobs = null;
    if (this.receiving === tr) this.receiving = null;
    if (tell) { this.draining = tr.id; this.control({ type: 'cancel', id: tr.id }); }
    this.ui.update(tr);
  }

  onMessage(data) {
    if (typeof data !== 'string') { this.onChunk(data); return; }
    let m;
    try { m = JSON.parse(data); } catch { return; }
    const out = this.mine.get(m.id) || null;
    switch (m.type) {
      case 'offer': this.onOffer(m); break;
      case 'end': this.onEnd(m); break;
      case 'done': if (out && out.state === 'sent') { out.state = 'done'; out.done = out.size; this.ui.update(out); } break;
      case 'cancel':
        if (this.draining === m.id) { this.draining = null; break; }
        if (this.receiving && this.receiving.id === m.id) { this.cancelIn(this.receiving, false); break; }
        if (out) { this.cancelOut(out, false); this.control({ type: 'cancel', id: m.id }); }
        break;
      case 'too-large':
        this.ui.notice('file.toolargepeer', { name: String(m.name || ''), size: Number(m.size) || 0, limit: this.limit });
        break;
    }
  }

  onOffer(m) {
    if (this.receiving) this.cancelIn(this.receiving, false);
    const size = Number(m.size);
    const tr = { id: String(m.id), dir: 'in', name: String(m.name || 'file').slice(0, 255), size, mime: String(m.mime || ''), done: 0, state: 'active', parts: [], partBytes: 0, blobs: [] };
    tr.cancel = () => this.cancelIn(tr, true);
    if (!Number.isSafeInteger(size) || size < 0 || size > this.limit) {
      tr.state = 'toolarge';
      this.ui.add(tr);
      this.draining = tr.id;
      this.control({ type: 'cancel', id: tr.id });
      this.ui.notice('file.toolargepeer', { name: tr.name, size, limit: this.limit });
      return;
    }
    this.receiving = tr;
    this.ui.add(tr);
  }

  onChunk(buf) {
    const tr = this.receiving;
    if (!tr || tr.state !== 'active') return; // after a cancel: the rest of the file is dropped
    tr.parts.push(buf);
    tr.partBytes += buf.byteLength;
    tr.done += buf.byteLength;
    if (tr.done > tr.size) { this.cancelIn(tr, true); tr.state = 'failed'; this.ui.update(tr); return; }
    if (tr.partBytes >= PART) { tr.blobs.push(new Blob(tr.parts)); tr.parts = []; tr.partBytes = 0; }
    this.ui.update(tr);
  }

  onEnd(m) {
    const tr = this.receiving;
    if (!tr || tr.id !== m.id) return;
    this.receiving = null;
    if (tr.done !== tr.size) { tr.state = 'failed'; this.ui.update(tr); return; }
    tr.blobs.push(new Blob(tr.parts));
    const blob = new Blob(tr.blobs, { type: /^[\w.+-]+\/[\w.+-]+$/.test(tr.mime) ? tr.mime : 'application/octet-stream' });
    tr.parts = tr.blobs = null;
    tr.url = URL.createObjectURL(blob);
    tr.state = 'done';
    this.control({ type: 'done', id: tr.id });
    this.ui.update(tr);
  }

  abortAll() {
    if (this.sending) { this.sending.state = 'failed'; if (this.sending.wake) this.sending.wake(); this.ui.update(this.sending); }
    for (const tr of this.outgoing) { tr.state = 'failed'; this.ui.update(tr); }
    this.outgoing = [];
    if (this.receiving) { this.receiving.state = 'failed'; this.receiving.parts = this.receiving.blobs = null; this.ui.update(this.receiving); this.receiving = null; }
  }
}
