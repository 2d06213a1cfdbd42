package relay

import (
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// C22: unauthenticated answers are small, carry no SOFTWARE or RFC 5780 attributes, and are
// rate-limited per source so that spoofed requests cannot turn Ferry into an amplifier.
func TestC22Amplification(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.UnauthRate, c.UnauthBurst = 0, 0 }) // the defaults
	c := dialClient(t, "udp", env.udp, "127.0.0.8:0")

	ratio := func(name string, req []byte, limit float64) *stun.Message {
		t.Helper()
		c.send(req)
		b, err := c.recv(2 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := float64(len(b)) / float64(len(req))
		t.Logf("%s: %d bytes -> %d bytes, ratio %.2f", name, len(req), len(b), r)
		if r > limit {
			t.Errorf("%s: amplification %.2f exceeds %.2f", name, r, limit)
		}
		m := &stun.Message{Raw: b}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		for _, a := range []stun.AttrType{stun.AttrSoftware, stun.AttrOtherAddress, stun.AttrResponseOrigin} {
			if m.Contains(a) {
				t.Errorf("%s: response carries %s", name, a)
			}
		}
		return m
	}
	binding := mustBuild(t, stun.TransactionID, stun.BindingRequest)
	if m := ratio("Binding", binding.Raw, 1.6); m.Contains(stun.AttrFingerprint) {
		t.Error("FINGERPRINT added although the request had none")
	}
	ratio("Binding+FINGERPRINT", mustBuild(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw, 1.5)
	ratio("CHANGE-REQUEST", mustBuild(t, stun.TransactionID, stun.BindingRequest,
		stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, 6}}).Raw, 2.0)
	// The first challenge comes from pion; later ones from Ferry, with the nonce pion issued:
	// the same 72 bytes (no reason phrase; the nonce and the realm take the rest).
	allocate := func() []byte {
		return mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport).Raw
	}
	m := ratio("unauthenticated Allocate (pion)", allocate(), 2.6)
	if errCode(m) != 401 {
		t.Fatalf("unauthenticated Allocate: %d", errCode(m))
	}
	m2 := ratio("unauthenticated Allocate (Ferry)", allocate(), 2.6)
	var n1, n2 stun.Nonce
	if errCode(m2) != 401 || n1.GetFrom(m) != nil || n2.GetFrom(m2) != nil || n1.String() != n2.String() {
		t.Fatalf("Ferry's challenge must carry pion's nonce: %d %q %q", errCode(m2), n1, n2)
	}

	// 2000 unauthenticated Allocates in 2 s (of the injected clock) from one source: the
	// burst plus 2 s of refill are answered; another source is unaffected.
	flood := dialClient(t, "udp", env.udp, "127.0.0.9:0")
	answered := make(chan int)
	go func() {
		n := 0
		for {
			if _, err := flood.recv(500 * time.Millisecond); err != nil {
				answered <- n
				return
			}
			n++
		}
	}()
	for i := range 2000 {
		flood.send(mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport).Raw)
		if i%100 == 99 {
			time.Sleep(20 * time.Millisecond) // let the control queue drain
			env.clock.Add(100 * time.Millisecond)
		}
	}
	n := <-answered
	want := DefaultUnauthBurst + 2*DefaultUnauthRate
	t.Logf("flood: %d of 2000 answered", n)
	if n < want-2 || n > want+2 {
		t.Fatalf("answered %d, want about %d", n, want)
	}
	max := want + 2
	if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "rate_limited"); got < float64(2000-max) {
		t.Fatalf("rate-limited drops counted: %v", got)
	}
	other := dialClient(t, "udp", env.udp, "127.0.0.10:0")
	if r, err := other.transact(mustBuild(t, stun.TransactionID, stun.BindingRequest)); err != nil || r.Type != stun.BindingSuccess {
		t.Fatalf("another source was throttled: %v %v", r, err)
	}
	if got := env.metric(t, "ferry_turn_requests_total", "method", "allocate", "result", "401"); got < float64(DefaultUnauthBurst) {
		t.Fatalf("401s counted: %v", got)
	}
}
