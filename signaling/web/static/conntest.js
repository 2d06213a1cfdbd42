// The connection test before joining: for each way of reaching the relay (UDP, TCP, TLS),
// gather candidates with only that TURN URL and relay-only policy; a relay candidate means
// the relay answered and allocated, so a relayed call will work over that transport.

const WAIT_MS = 6000;

// transportOf classifies a turn:/turns: URL (RFC 7065).
export function transportOf(url) {
  if (/^turns:/i.test(url)) return 'tls';
  if (!/^turn:/i.test(url)) return null;
  return /transport=tcp/i.test(url) ? 'tcp' : 'udp';
}

async function probe(server, urls) {
  const pc = new RTCPeerConnection({ iceServers: [{ ...server, urls }], iceTransportPolicy: 'relay' });
  try {
    pc.createDataChannel('probe');
    const found = new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), WAIT_MS);
      pc.onicecandidate = (ev) => {
        if (ev.candidate && ev.candidate.type === 'relay') { clearTimeout(timer); resolve(true); }
        if (!ev.candidate) { clearTimeout(timer); resolve(false); }
      };
    });
    await pc.setLocalDescription();
    return await found;
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
    if (by[tr].length > 0 && server) out[tr] = await probe(server, by[tr]);
  }));
  return out;
}
