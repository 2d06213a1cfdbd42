package relay

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/stun/v4"
)

// What a browser sends without credentials, measured with Chromium 156 against Ferry through
// a UDP spy (README: Running a public relay safely): per network interface, one 20-byte
// Binding (its server-reflexive candidate; also with iceTransportPolicy "relay") and one
// 28-byte Allocate (answered 401) when a call starts, then a Binding every 10 s while the
// call lasts. TURN over TCP and TLS is not paced.
const (
	browserStartAnswers = 2
	browserKeepalive    = 10 * time.Second
)

// The default pace of unauthenticated answers fits a clinic of 200 practitioners behind one
// NAT address who all start a call at 9:00, each browser on two network interfaces (wired
// and Wi-Fi): every Binding and every challenge is answered the first time, so no browser
// waits for a retransmission; the calls allocate; and a minute of keepalives from all of them
// is answered too. Nothing is dropped for the pace.
func TestClinicBehindOneAddress(t *testing.T) {
	const browsers, interfaces = 200, 2
	env := newTestEnv(t, func(c *Config) {
		c.UnauthRate, c.UnauthBurst = 0, 0 // the defaults
		if _, err := SetSocketBuffers(c.UDP[0][0], 4<<20); err != nil {
			t.Fatal(err)
		}
	})
	if need := browsers * interfaces * browserStartAnswers; need > DefaultUnauthBurst {
		t.Fatalf("%d answers at 9:00, burst %d", need, DefaultUnauthBurst)
	}
	type iface struct {
		c    *stunClient
		user string
	}
	var all []iface
	for b := range browsers {
		for range interfaces {
			c := dialClient(t, "udp", env.udp, "127.0.0.77:0") // the clinic's NAT address
			all = append(all, iface{c, fmt.Sprintf("dr-%d", b)})
		}
	}
	// 9:00: every interface sends its Binding and its first Allocate at once.
	for _, f := range all {
		f.c.send(mustBuild(t, stun.TransactionID, stun.BindingRequest).Raw)
		f.c.send(mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport).Raw)
	}
	nonces := make([]string, len(all))
	for i, f := range all {
		for range 2 {
			b, err := f.c.recv(3 * time.Second)
			if err != nil {
				t.Fatalf("interface %d of %d waits for an answer at 9:00: %v", i, len(all), err)
			}
			m := &stun.Message{Raw: b}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			var n stun.Nonce
			if errCode(m) == 401 && n.GetFrom(m) == nil {
				nonces[i] = n.String()
			}
		}
		if nonces[i] == "" {
			t.Fatalf("interface %d: no challenge", i)
		}
	}
	// The calls allocate (the second Allocate carries credentials: not paced).
	for i, f := range all {
		cred := env.cred(t, f.user, time.Hour)
		f.c.username, f.c.realm, f.c.nonce = cred.Username, testRealm, nonces[i]
		f.c.key = auth.LongTermKey(cred.Username, testRealm, cred.Password)
		if code, _ := f.c.do(stun.MethodAllocate, udpTransport); code != 0 {
			t.Fatalf("interface %d: Allocate %d", i, code)
		}
	}
	// A minute of calls: every interface's keepalive Binding every 10 s.
	for range time.Minute / browserKeepalive {
		env.clock.Add(browserKeepalive)
		for _, f := range all {
			f.c.send(mustBuild(t, stun.TransactionID, stun.BindingRequest).Raw)
		}
		for i, f := range all {
			if _, err := f.c.recv(3 * time.Second); err != nil {
				t.Fatalf("interface %d: keepalive unanswered: %v", i, err)
			}
		}
	}
	if d := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "rate_limited"); d != 0 {
		t.Fatalf("%v answers dropped for the pace", d)
	}
	if env.srv.AllocationCount() != len(all) {
		t.Fatalf("%d allocations", env.srv.AllocationCount())
	}
	t.Logf("one address: %d browsers x %d interfaces started at once (%d answers of a burst of %d), then %.0f keepalives/s of %d/s",
		browsers, interfaces, len(all)*browserStartAnswers, DefaultUnauthBurst, float64(len(all))/browserKeepalive.Seconds(), DefaultUnauthRate)
}
