// One RTCPeerConnection with one other participant: perfect negotiation (the room's roles
// decide who is polite), fixed audio and video slots that receive even when this side has
// no camera or microphone, a screen-share transceiver, chat and file data channels, ICE
// restarts when the path fails, and fresh TURN credentials through setConfiguration.
import { FileChannel } from './transfer.js';

// isPolite: the host is impolite and a guest polite; between equal roles the participant
// whose id sorts lower is impolite (README, "Roles and perfect negotiation").
export function isPolite(me, myRole, id, role) {
  if (myRole !== role) return myRole !== 'host';
  return me > id;
}

const RESTART_AFTER_MS = { impolite: 2000, polite: 4000 }; // ICE "disconnected" this long
const STUCK_MS = 10000; // not connected this long after a negotiation: restart ICE again

function midOrder(t) {
  return t.mid === null ? Infinity : Number(t.mid);
}

export class Peer {
  // opts: id, role, name, polite, config (RTCConfiguration), media (LocalMedia),
  // send(m) (to this peer over the room), fileLimit, ev (the page's callbacks).
  constructor(opts) {
    Object.assign(this, { id: opts.id, role: opts.role, name: opts.name || '', polite: opts.polite });
    this.media = opts.media;
    this.send = opts.send;
    this.ev = opts.ev;
    this.ready = !this.polite; // the polite side answers first and offers only afterwards
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingAnswer = false;
    this.queue = Promise.resolve();
    this.remote = new MediaStream();
    this.remoteMedia = { audio: true, video: true };
    this.screen = null; // our screen-share transceiver
    this.timers = {};
    this.since = Date.now();
    const pc = new RTCPeerConnection(opts.config);
    this.pc = pc;
    this.chat = pc.createDataChannel('chat', { negotiated: true, id: 0 });
    this.files = new FileChannel(pc.createDataChannel('file', { negotiated: true, id: 1 }), pc, opts.fileLimit, opts.fileUI);
    if (!this.polite) {
      for (const kind of ['audio', 'video']) {
        const track = this.media[kind];
        pc.addTransceiver(track || kind, { direction: track ? 'sendrecv' : 'recvonly' });
      }
    }
    pc.onnegotiationneeded = () => this.negotiate();
    pc.onsignalingstatechange = () => { if (pc.signalingState === 'have-local-offer') this.offerAt = Date.now(); };
    pc.onicecandidate = ({ candidate }) => this.send({ type: 'candidate', candidate: candidate ? candidate.toJSON() : null });
    pc.ontrack = (ev) => this.onTrack(ev);
    pc.oniceconnectionstatechange = () => this.onICEState();
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') this.restart();
      if (pc.connectionState === 'connected') this.since = Date.now();
      this.ev.state(this);
    };
    this.chat.onopen = () => this.sendMediaState();
    this.chat.onmessage = (ev) => this.onChat(ev.data);
    this.timers.watch = setInterval(() => this.watch(), 2000);
  }

  // slot is the transceiver that carries this side's camera or microphone: the first of
  // its kind in m-line order, the same on both sides.
  slot(kind) {
    return this.pc.getTransceivers()
      .filter((t) => t.receiver.track.kind === kind && t !== this.screen && t.direction !== 'stopped')
      .sort((a, b) => midOrder(a) - midOrder(b))[0] || null;
  }

  async negotiate() {
    const pc = this.pc;
    if (!this.ready || pc.signalingState !== 'stable') return; // fires again once stable
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      if (pc.localDescription.type === 'offer') this.send({ type: 'offer', sdp: pc.localDescription.sdp });
    } catch (err) {
      console.error('ferry: offer failed', err);
    } finally {
      this.makingOffer = false;
    }
  }

  // enqueue runs remote signaling in arrival order, one at a time.
  enqueue(fn) {
    this.queue = this.queue.then(fn).catch((err) => console.error('ferry: signaling', err));
    return this.queue;
  }

  onSignal(m) {
    if (m.type === 'offer' || m.type === 'answer') return this.enqueue(() => this.onDescription(m.type, m.sdp));
    if (m.type === 'candidate') return this.enqueue(() => this.onCandidate(m.candidate));
    if (m.type === 'restart') return this.enqueue(async () => this.pc.restartIce());
    return null;
  }

  async onDescription(type, sdp) {
    const pc = this.pc;
    if (pc.signalingState === 'closed') return;
    const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingAnswer);
    const collision = type === 'offer' && !readyForOffer;
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // a copy sent again
    this.settingAnswer = type === 'answer';
    try {
      await pc.setRemoteDescription({ type, sdp }); // rolls back our own offer if we are polite
    } finally {
      this.settingAnswer = false;
    }
    if (type !== 'offer') return;
    await this.attachLocal();
    await pc.setLocalDescription();
    this.send({ type: 'answer', sdp: pc.localDescription.sdp });
    if (!this.ready) {
      this.ready = true;
      queueMicrotask(() => this.negotiate());
    }
  }

  async onCandidate(c) {
    if (!c || !c.candidate) return;
    try {
      await this.pc.addIceCandidate(c);
    } catch (err) {
      if (!this.ignoreOffer && this.pc.signalingState !== 'closed') console.warn('ferry: candidate', err.name);
    }
  }

  // attachLocal puts this side's current tracks into the audio and video slots; a slot
  // without a track only receives (recvonly), so a patient without a camera still sees.
  async attachLocal() {
    for (const kind of ['audio', 'video']) {
      const t = this.slot(kind);
      if (!t) continue;
      const track = this.media[kind];
      if (t.sender.track !== track) await t.sender.replaceTrack(track);
      const dir = track ? 'sendrecv' : 'recvonly';
      if (t.direction !== dir) t.direction = dir;
    }
  }

  // updateLocal applies changed local tracks (device switch, camera on/off, retry).
  updateLocal() {
    return this.enqueue(async () => {
      if (this.pc.signalingState === 'closed') return;
      await this.attachLocal();
      this.sendMediaState();
    });
  }

  onTrack({ track, transceiver }) {
    if (transceiver === this.slot(track.kind)) {
      for (const old of this.remote.getTracks()) if (old.kind === track.kind && old !== track) this.remote.removeTrack(old);
      if (!this.remote.getTracks().includes(track)) this.remote.addTrack(track);
      track.onmute = track.onunmute = () => this.ev.media(this);
      this.ev.track(this);
      return;
    }
    if (track.kind !== 'video') return;
    const show = () => this.ev.screen(this, track.muted || track.readyState === 'ended' ? null : track);
    track.addEventListener('mute', show);
    track.addEventListener('unmute', show);
    track.addEventListener('ended', show);
    show();
  }

  onICEState() {
    const s = this.pc.iceConnectionState;
    clearTimeout(this.timers.restart);
    if (s === 'failed') this.restart();
    if (s === 'disconnected') this.timers.restart = setTimeout(() => this.restart(), RESTART_AFTER_MS[this.polite ? 'polite' : 'impolite']);
    this.ev.state(this);
  }

  connected() {
    return this.pc.connectionState === 'connected';
  }

  restart() {
    if (this.pc.signalingState === 'closed' || this.connected()) return;
    this.since = Date.now();
    this.pc.restartIce();
  }

  // watch restarts ICE when a negotiation left the connection unconnected for too long, and
  // takes back an offer that got no answer (lost, or refused by the room) to offer anew.
  watch() {
    const pc = this.pc;
    if (pc.signalingState === 'closed') return;
    if (pc.signalingState === 'have-local-offer' && Date.now() - this.offerAt > STUCK_MS) {
      this.offerAt = Date.now();
      this.enqueue(async () => {
        if (pc.signalingState !== 'have-local-offer') return;
        await pc.setLocalDescription({ type: 'rollback' });
        await this.negotiate();
      });
    }
    if (this.connected()) { this.since = Date.now(); return; }
    if (this.ready && Date.now() - this.since > STUCK_MS) this.restart();
  }

  // resync runs after the room connection came back: an offer we sent may have been lost
  // in the dead socket, so send it again; restart ICE if the path is down.
  resync() {
    return this.enqueue(async () => {
      const pc = this.pc;
      if (pc.signalingState === 'have-local-offer' && pc.localDescription) this.send({ type: 'offer', sdp: pc.localDescription.sdp });
      if (!this.connected()) this.restart();
    });
  }

  // setICE applies fresh ICE servers (TURN credentials) and the relay-only choice to the
  // running connection; the next gathering uses them (restartIce to use them now).
  setICE(iceServers, relayOnly) {
    const pc = this.pc;
    if (pc.signalingState === 'closed') return;
    const cur = pc.getConfiguration();
    const policy = relayOnly ? 'relay' : 'all';
    const changedPolicy = cur.iceTransportPolicy !== policy;
    pc.setConfiguration({ ...cur, iceServers, iceTransportPolicy: policy });
    if (changedPolicy) pc.restartIce();
  }

  sendChat(text) {
    if (this.chat.readyState !== 'open') return false;
    this.chat.send(JSON.stringify({ type: 'chat', text, ts: Date.now() }));
    return true;
  }

  sendMediaState() {
    if (this.chat.readyState !== 'open') return;
    const m = this.media;
    this.chat.send(JSON.stringify({ type: 'media', audio: !!m.audio && m.audio.enabled, video: !!m.video }));
  }

  onChat(data) {
    if (typeof data !== 'string' || data.length > 20000) return;
    let m;
    try { m = JSON.parse(data); } catch { return; }
    if (m.type === 'chat' && typeof m.text === 'string') this.ev.chat(this, m.text.slice(0, 4000), Number(m.ts) || Date.now());
    if (m.type === 'media') { this.remoteMedia = { audio: !!m.audio, video: !!m.video }; this.ev.media(this); }
  }

  // share starts sending track (a screen) on a transceiver of its own, or stops (null).
  share(track) {
    return this.enqueue(async () => {
      const pc = this.pc;
      if (pc.signalingState === 'closed') return;
      if (track && !this.screen) {
        this.screen = pc.addTransceiver(track, { direction: 'sendonly' });
        return;
      }
      if (!this.screen) return;
      await this.screen.sender.replaceTrack(track);
      this.screen.direction = track ? 'sendonly' : 'inactive';
    });
  }

  // path reads the selected candidate pair: relayed or direct, and the relay transport.
  async path() {
    const stats = await this.pc.getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    if (!pair) stats.forEach((s) => { if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId) || {};
    const remote = stats.get(pair.remoteCandidateId) || {};
    return { local: local.candidateType, remote: remote.candidateType, relayProtocol: local.relayProtocol || '' };
  }

  close() {
    for (const t of Object.values(this.timers)) { clearTimeout(t); clearInterval(t); }
    this.files.abortAll();
    this.pc.close();
  }
}
