// The browser tests' recorder (browser-cases.md, "The wrapper"): injected before the page's
// own scripts, it keeps every RTCPeerConnection in __pcs, logs state changes and the calls
// that negotiate, records data-channel sends, getUserMedia/getDisplayMedia and srcObject
// assignments, and collects errors and CSP violations into __errs. It changes nothing the
// page does, except where a test sets one of the hooks (__gumHook, __maxMessageSize).
(() => {
  const errs = (window.__errs = []);
  addEventListener('error', (e) => errs.push({ type: 'error', msg: String(e.message) }));
  addEventListener('unhandledrejection', (e) => {
    const r = e.reason;
    errs.push({ type: 'unhandledrejection', msg: r && r.name ? `${r.name}: ${r.message}` : String(r) });
  });
  document.addEventListener('securitypolicyviolation', (e) => errs.push({ type: 'csp', msg: `${e.violatedDirective} ${e.blockedURI}` }));

  const log = (window.__log = []);
  const pcs = (window.__pcs = []);
  const Orig = window.RTCPeerConnection;
  const events = ['signalingstatechange', 'iceconnectionstatechange', 'connectionstatechange', 'negotiationneeded'];
  function Recorded(...args) {
    const pc = new Orig(...args);
    pc.__id = pcs.length;
    pcs.push(pc);
    for (const ev of events) {
      pc.addEventListener(ev, () => log.push({ pc: pc.__id, ev, sig: pc.signalingState, ice: pc.iceConnectionState, conn: pc.connectionState, t: Date.now() }));
    }
    return pc;
  }
  Recorded.prototype = Orig.prototype;
  Object.setPrototypeOf(Recorded, Orig);
  window.RTCPeerConnection = Recorded;
  const describe = (m, a) => {
    if (!a) return '';
    if (m === 'setConfiguration') return JSON.stringify({ users: (a.iceServers || []).map((s) => s.username || null), policy: a.iceTransportPolicy });
    return a.type || '';
  };
  for (const m of ['setLocalDescription', 'setRemoteDescription', 'setConfiguration', 'restartIce']) {
    const orig = Orig.prototype[m];
    Orig.prototype[m] = function (...a) {
      if (m === 'setRemoteDescription' && window.__maxMessageSize && a[0] && a[0].sdp) {
        a[0] = { type: a[0].type, sdp: a[0].sdp.replace(/a=max-message-size:\d+/g, `a=max-message-size:${window.__maxMessageSize}`) };
      }
      const entry = { pc: this.__id, call: m, arg: describe(m, a[0]), before: this.signalingState, t: Date.now() };
      log.push(entry);
      let r;
      try {
        r = orig.apply(this, a);
      } catch (e) {
        entry.error = e.name;
        throw e;
      }
      if (r && typeof r.then === 'function') {
        return r.then((v) => { entry.ok = true; entry.after = this.signalingState; return v; },
          (e) => { entry.error = e.name; entry.after = this.signalingState; throw e; });
      }
      entry.ok = true;
      entry.after = this.signalingState;
      return r;
    };
  }

  const dcs = (window.__dcs = []);
  const origCreateDC = Orig.prototype.createDataChannel;
  Orig.prototype.createDataChannel = function (...a) {
    const dc = origCreateDC.apply(this, a);
    dc.__pc = this;
    dcs.push(dc);
    return dc;
  };

  const sends = (window.__sends = { count: 0, maxSize: 0, maxBuffered: 0, errors: [], bytes: 0 });
  const origSend = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (d) {
    const size = typeof d === 'string' ? new TextEncoder().encode(d).length : d.byteLength !== undefined ? d.byteLength : d.size;
    const max = this.__pc && this.__pc.sctp ? this.__pc.sctp.maxMessageSize : 0;
    if (max && size > max) sends.overMax = (sends.overMax || 0) + 1;
    if (typeof d !== 'string') { sends.binary = (sends.binary || 0) + 1; sends.binaryBytes = (sends.binaryBytes || 0) + size; }
    sends.count++;
    sends.bytes += size;
    if (size > sends.maxSize) sends.maxSize = size;
    if (this.bufferedAmount > sends.maxBuffered) sends.maxBuffered = this.bufferedAmount;
    try {
      return origSend.call(this, d);
    } catch (e) {
      sends.errors.push(e.name);
      throw e;
    }
  };

  const sockets = (window.__ws = []);
  const wsCloses = (window.__wsCloses = []);
  const OrigWS = window.WebSocket;
  function RecordedWS(...args) {
    const ws = new OrigWS(...args);
    sockets.push(ws);
    ws.addEventListener('close', (e) => wsCloses.push(e.code));
    return ws;
  }
  RecordedWS.prototype = OrigWS.prototype;
  Object.setPrototypeOf(RecordedWS, OrigWS);
  window.WebSocket = RecordedWS;

  const tracks = (window.__tracks = []);
  const md = navigator.mediaDevices;
  const gum = (window.__gum = []);
  if (md) {
    const realGUM = md.getUserMedia.bind(md);
    md.getUserMedia = async (c) => {
      const e = { kind: 'user', c: JSON.stringify(c) };
      gum.push(e);
      try {
        const s = await (window.__gumHook ? window.__gumHook(c, realGUM) : realGUM(c));
        e.tracks = s.getTracks().map((t) => t.kind);
        tracks.push(...s.getTracks());
        return s;
      } catch (err) {
        e.error = err.name;
        throw err;
      }
    };
    if (md.getDisplayMedia) {
      const realGDM = md.getDisplayMedia.bind(md);
      md.getDisplayMedia = async (c) => {
        const e = { kind: 'display', c: JSON.stringify(c) };
        gum.push(e);
        try {
          const s = await realGDM(c);
          e.tracks = s.getTracks().map((t) => t.kind);
          return s;
        } catch (err) {
          e.error = err.name;
          throw err;
        }
      };
    }
  }

  const src = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  const sets = (window.__srcSets = []);
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    configurable: true,
    get() { return src.get.call(this); },
    set(v) {
      sets.push({ el: (this.dataset && this.dataset.testid) || this.id, stream: v ? v.id : null, t: Date.now() });
      src.set.call(this, v);
    },
  });
})();
