// The ferry.v1 WebSocket: joins the room with the link's token, pings, reconnects with the
// same token after a drop (the server keeps the place for its reconnect grace), drops
// relayed messages it has seen (seq), and holds outgoing messages while reconnecting.

// Close codes after which reconnecting cannot help (README, "Close codes").
const FINAL = new Set([1000, 4400, 4401, 4402, 4403, 4404, 4406, 4409, 4410, 4411, 4413]);
const PING_MS = 10000;      // the server closes a connection silent for 60 s
const DEAD_MS = 25000;      // no message (not even a pong) this long: the socket is dead
const PROBE_MS = 4000;      // after a network change, a ping unanswered this long: dead
const BACKOFF_MS = [200, 500, 1000, 2000, 3000, 5000];
const HOLD_MAX = 256;       // outgoing messages held while reconnecting

export class Signal {
  // handlers: message(m), state('connecting'|'open'|'reconnecting'|'closed'), closed(code, reason).
  constructor(room, token, handlers) {
    this.url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/rooms/${encodeURIComponent(room)}/ws`;
    this.token = token;
    this.h = handlers;
    this.ws = null;
    this.lastSeq = 0;
    this.attempt = 0;
    this.held = [];
    this.maxBytes = 65536; // the room's limit (welcome.maxMessageBytes): larger messages close the socket (1009)
    this.stopped = false;
    this.timers = {};
    this.onOnline = () => { if (!this.isOpen()) this.reconnectNow(); else this.probe(); };
    addEventListener('online', this.onOnline);
    if (navigator.connection) navigator.connection.addEventListener('change', this.onOnline);
  }

  isOpen() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.welcomed; }

  connect() {
    this.stopped = false;
    this.welcomed = false;
    clearTimeout(this.timers.retry);
    const ws = new WebSocket(this.url, ['ferry.v1', 'token.' + this.token]);
    this.ws = ws;
    this.h.state(this.attempt === 0 ? 'connecting' : 'reconnecting');
    ws.onmessage = (ev) => this.receive(ws, ev);
    ws.onclose = (ev) => this.closed(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event follows
  }

  receive(ws, ev) {
    if (ws !== this.ws || typeof ev.data !== 'string') return;
    this.lastHeard = Date.now();
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    if (m.type === 'welcome') {
      if (!m.reconnected) this.lastSeq = 0; // a new participant: seq starts again
      this.welcomed = true;
      this.attempt = 0;
      if (m.maxMessageBytes > 0) this.maxBytes = m.maxMessageBytes;
      this.startPing();
      this.h.message(m);
      this.h.state('open');
      const held = this.held;
      this.held = [];
      for (const out of held) this.send(out);
      return;
    }
    if (m.seq) {
      if (m.seq <= this.lastSeq) return; // sent again after a reconnect: seen already
      this.lastSeq = m.seq;
    }
    this.h.message(m);
  }

  closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this.stopPing();
    this.ws = null;
    this.welcomed = false;
    if (this.stopped) return;
    if (FINAL.has(code)) {
      this.stopped = true;
      this.h.state('closed');
      this.h.closed(code, reason);
      return;
    }
    this.h.state('reconnecting');
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt++;
    this.timers.retry = setTimeout(() => this.connect(), navigator.onLine === false ? 5000 : delay);
  }

  // reconnectNow abandons the current socket (it may be half-open) and connects again.
  reconnectNow() {
    if (this.stopped) return;
    const old = this.ws;
    if (old) {
      old.onclose = old.onmessage = null;
      try { old.close(4000, 'reconnecting'); } catch { /* already closing */ }
    }
    this.ws = null;
    this.stopPing();
    this.attempt = Math.max(this.attempt, 1);
    this.connect();
  }

  startPing() {
    this.stopPing();
    this.lastHeard = Date.now();
    this.timers.ping = setInterval(() => {
      if (Date.now() - this.lastHeard > DEAD_MS) { this.reconnectNow(); return; }
      this.rawSend({ type: 'ping' });
    }, PING_MS);
  }

  stopPing() { clearInterval(this.timers.ping); clearTimeout(this.timers.probe); }

  // probe checks the socket after a network change: a socket on the old network may be
  // half-open, and waiting for the heartbeat would take DEAD_MS.
  probe() {
    const heard = this.lastHeard;
    this.rawSend({ type: 'ping' });
    clearTimeout(this.timers.probe);
    this.timers.probe = setTimeout(() => { if (this.lastHeard === heard) this.reconnectNow(); }, PROBE_MS);
  }

  rawSend(m) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    const data = JSON.stringify(m);
    if (data.length > this.maxBytes / 3 && new TextEncoder().encode(data).length > this.maxBytes) {
      // Ferry would close the connection (1009), and a resend would again: drop it.
      console.error('ferry: a message is larger than the room allows', m.type, data.length);
      return true;
    }
    this.ws.send(data);
    return true;
  }

  // send sends m now, or holds it until the connection is back.
  send(m) {
    if (this.isOpen() && this.rawSend(m)) return;
    if (this.stopped) return;
    if (this.held.length < HOLD_MAX) this.held.push(m);
  }

  // leave says goodbye (close 1000: the place is freed at once) and stops reconnecting.
  leave() {
    this.stopped = true;
    this.held = [];
    this.stopPing();
    clearTimeout(this.timers.retry);
    removeEventListener('online', this.onOnline);
    if (navigator.connection) navigator.connection.removeEventListener('change', this.onOnline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = null;
      try { ws.close(1000, 'bye'); } catch { /* closing */ }
    }
  }
}
