// The local camera and microphone: acquisition that tells each device's problem apart
// (denied, busy, not found), device choice, and a microphone level meter.

// kindOf maps a getUserMedia error to what the page tells the user.
export function kindOf(err) {
  switch (err && err.name) {
    case 'NotAllowedError': case 'SecurityError': case 'PermissionDeniedError': return 'denied';
    case 'NotFoundError': case 'OverconstrainedError': case 'DevicesNotFoundError': return 'notfound';
    case 'NotReadableError': case 'TrackStartError': case 'AbortError': return 'busy';
    default: return 'failed';
  }
}

async function capture(constraints) {
  return navigator.mediaDevices.getUserMedia(constraints);
}

export class LocalMedia {
  constructor() {
    this.audio = null;
    this.video = null;
    this.errors = { audio: null, video: null };
    this.audioId = '';
    this.videoId = '';
    this.cameraOff = false;
    this.meter = null;
  }

  constraint(kind) {
    const id = kind === 'audio' ? this.audioId : this.videoId;
    if (kind === 'video') return id ? { deviceId: { exact: id }, width: { ideal: 1280 }, height: { ideal: 720 } } : { width: { ideal: 1280 }, height: { ideal: 720 } };
    return id ? { deviceId: { exact: id }, echoCancellation: true, noiseSuppression: true } : { echoCancellation: true, noiseSuppression: true };
  }

  // acquire asks for what is missing: both at once first (one permission prompt), then
  // each alone so that a busy camera does not cost the microphone.
  async acquire() {
    const want = { audio: !this.audio, video: !this.video && !this.cameraOff };
    if (!want.audio && !want.video) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.errors = { audio: want.audio ? 'failed' : null, video: want.video ? 'failed' : null };
      return;
    }
    if (want.audio && want.video) {
      try {
        const s = await capture({ audio: this.constraint('audio'), video: this.constraint('video') });
        this.take(s);
        this.errors = { audio: null, video: null };
        return;
      } catch { /* find out which device failed */ }
    }
    for (const kind of ['audio', 'video']) {
      if (!want[kind]) continue;
      try {
        this.take(await capture({ [kind]: this.constraint(kind) }));
        this.errors[kind] = null;
      } catch (err) {
        this.errors[kind] = kindOf(err);
      }
    }
  }

  take(stream) {
    for (const track of stream.getTracks()) {
      const old = this[track.kind];
      if (old && old !== track) old.stop();
      this[track.kind] = track;
    }
  }

  // stream returns a fresh MediaStream of the live tracks (for the preview).
  stream() {
    return new MediaStream([this.audio, this.video].filter(Boolean));
  }

  async devices() {
    try {
      return await navigator.mediaDevices.enumerateDevices();
    } catch {
      return [];
    }
  }

  // switchDevice replaces the track of kind with one from deviceId.
  async switchDevice(kind, deviceId) {
    if (kind === 'audio') this.audioId = deviceId; else this.videoId = deviceId;
    if (kind === 'video' && this.cameraOff) return;
    try {
      const s = await capture({ [kind]: this.constraint(kind) });
      this.take(s);
      this.errors[kind] = null;
    } catch (err) {
      this.errors[kind] = kindOf(err);
    }
  }

  // setCamera turns the camera off (the track stops: the light goes out) or on again.
  async setCamera(on) {
    this.cameraOff = !on;
    if (!on) {
      if (this.video) this.video.stop();
      this.video = null;
      return;
    }
    await this.acquire();
  }

  setMuted(muted) {
    if (this.audio) this.audio.enabled = !muted;
  }

  // startMeter drives meter (a <meter>, 0..1) from the microphone's level.
  startMeter(meterEl) {
    this.stopMeter();
    if (!this.audio || typeof AudioContext === 'undefined') return;
    const ctx = new AudioContext();
    const src = ctx.createMediaStreamSource(new MediaStream([this.audio]));
    const an = ctx.createAnalyser();
    an.fftSize = 512;
    src.connect(an);
    const buf = new Float32Array(an.fftSize);
    const timer = setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      meterEl.value = Math.min(1, Math.sqrt(sum / buf.length) * 4);
    }, 100);
    const resume = () => { if (ctx.state === 'suspended') ctx.resume().catch(() => {}); };
    document.addEventListener('click', resume);
    this.meter = { ctx, timer, resume };
  }

  stopMeter() {
    if (!this.meter) return;
    clearInterval(this.meter.timer);
    document.removeEventListener('click', this.meter.resume);
    this.meter.ctx.close().catch(() => {});
    this.meter = null;
  }

  // stop ends every track (the camera light goes out) and the meter.
  stop() {
    this.stopMeter();
    for (const track of [this.audio, this.video]) if (track) track.stop();
    this.audio = this.video = null;
  }
}
