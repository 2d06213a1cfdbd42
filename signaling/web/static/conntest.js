// The connection test: for each way of reaching the relay (UDP, TCP, TLS), gather candidates
// with only that TURN URL and relay-only policy; a relay candidate means the relay answered
// and allocated, so a relayed call will work over that transport. The consultation page runs
// it before joining (run); the check page (check.js) runs probe for every URL on its own.

const WAIT_MS = 6000;

// transportOf classifies a turn:/turns: URL (RFC 7065).
export function transportOf(url) {
  if (/^turns:/i.test(url)) return 'tls';
  if (!/^turn:/i.test(url)) return null;
  return /transport=tcp/i.test(url) ? 'tcp' : 'udp';
}

// probe gathers candidates with server's credential for urls only, relay only. It resolves
// {ok, ms, candidate, errors, timedOut}: ok when a relay candidate came back, ms after
// gathering began; not ok when gathering ended, or waitMs passed (timedOut), without one.
// onCandidate(candidate, ms) and onError({ms, url, code, text}) see every candidate and
// icecandidateerror as they come.
export async function probe(server, urls, { waitMs = WAIT_MS, onCandidate, onError } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [{ ...server, urls }], iceTransportPolicy: 'relay' });
  const errors = [];
  let start = 0;
  let timedOut = false;
  const since = () => Math.round(performance.now() - start);
  try {
    pc.createDataChannel('probe');
    const found = new Promise((resolve) => {
      const timer = setTimeout(() => { timedOut = true; resolve(null); }, waitMs);
      pc.onicecandidateerror = (ev) => {
        const e = { ms: since(), url: ev.url || '', code: ev.errorCode, text: ev.errorText || '' };
        errors.push(e);
        if (onError) onError(e);
      };
      pc.onicecandidate = (ev) => {
        if (ev.candidate && onCandidate) onCandidate(ev.candidate, since());
        if (ev.candidate && ev.candidate.type === 'relay') { clearTimeout(timer); resolve({ candidate: ev.candidate, ms: since() }); }
        if (!ev.candidate) { clearTimeout(timer); resolve(null); }
      };
    });
    start = performance.now();
    await pc.setLocalDescription();
    const got = await found;
    return { ok: !!got, ms: got ? got.ms : null, candidate: got ? got.candidate : null, errors, timedOut };
  } finally {
    pc.close();
  }
}

// run returns {udp, tcp, tls}: true (works), false (blocked) or null (not offered).
export async function run(iceServers) {
  const by = { udp: [], tcp: [], tls: [] };
  let server = null;
  for (const s of iceServers) {
    for (const u of [].concat(s.urls)) {
      const tr = transportOf(u);
      if (tr) { by[tr].push(u); server = s; }
    }
  }
  const out = { udp: null, tcp: null, tls: null };
  await Promise.all(Object.keys(by).map(async (tr) => {
    if (by[tr].length > 0 && server) out[tr] = (await probe(server, by[tr])).ok;
  }));
  return out;
}
