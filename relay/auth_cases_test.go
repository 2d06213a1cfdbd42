package relay

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/stun/v4"
)

// C12: a nonce the server never issued gets 438 with a fresh NONCE and REALM, the retry
// succeeds and the allocation, its permission and its channel survive, also three times in
// a row; a wrong or padded REALM gets 401 carrying the server's realm.
func TestC12StaleNonceAndRealm(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			echo := newUDPEcho(t, "127.0.0.2")
			c, _ := env.allocated(t, network, "u-c12")
			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.addr()}); code != 0 {
				t.Fatalf("ChannelBind: %d", code)
			}
			for i := range 3 {
				c.nonce = "forged-nonce-" + strconv.Itoa(i)
				r, err := c.transact(c.build(stun.MethodRefresh))
				if err != nil || errCode(r) != 438 {
					t.Fatalf("forged nonce: %v %v, want 438", r, err)
				}
				var n stun.Nonce
				var realm stun.Realm
				if n.GetFrom(r) != nil || realm.GetFrom(r) != nil || realm.String() != testRealm {
					t.Fatal("438 must carry NONCE and the server's REALM")
				}
				c.nonce = n.String()
				if code, _ := c.do(stun.MethodRefresh); code != 0 {
					t.Fatalf("retry with the fresh nonce: %d", code)
				}
			}
			c.send(c.channelData(0x4000, []byte("still here")))
			c.expectData(0x4000, echo.addr(), []byte("still here"))

			for _, bad := range []string{testRealm + "\x00", testRealm + "\x00\x00\x00", "other.test"} {
				saved := c.realm
				c.realm = bad
				c.key = auth.LongTermKey(c.username, bad, env.cred(t, "x", time.Hour).Password)
				r, err := c.transact(c.build(stun.MethodRefresh))
				c.realm = saved
				if err != nil || errCode(r) != 401 {
					t.Fatalf("realm %q: %v %v, want 401", bad, r, err)
				}
				var realm stun.Realm
				if realm.GetFrom(r) != nil || realm.String() != testRealm {
					t.Fatalf("401 must carry the server realm, got %q", realm.String())
				}
			}
			if got := env.metric(t, "ferry_turn_auth_failures_total", "reason", auth.ReasonWrongRealm); got != 3 {
				t.Fatalf("wrong_realm failures: %v, want 3", got)
			}
		})
	}
}

// C13: only canonical decimal seconds within max TTL authenticate; everything else is 401,
// counted by reason.
func TestC13TimestampFormsOnTheWire(t *testing.T) {
	env := newTestEnv(t)
	now := env.clock.Now().Unix()
	cases := []struct {
		username string
		ok       bool
		reason   string
	}{
		{"1893456000000:u-0001", false, auth.ReasonTooFarAhead}, // milliseconds: an expiry 50,000 years ahead
		{"99999999999:u-0001", false, auth.ReasonTooFarAhead},
		{strconv.FormatInt(now+86400, 10) + ":u-0001", true, ""},
		{strconv.FormatInt(now-1, 10) + ":u-0001", false, auth.ReasonExpired},
		{"+" + strconv.FormatInt(now+60, 10) + ":u-0001", false, auth.ReasonMalformed},
		{" " + strconv.FormatInt(now+60, 10) + ":u-0001", false, auth.ReasonMalformed},
		{"0x70000000:u-0001", false, auth.ReasonMalformed},
		{strconv.FormatInt(now+60, 10), true, ""}, // no user part, as coturn's clients send
	}
	for _, tc := range cases {
		c := env.dial(t, "udp")
		before := env.metric(t, "ferry_turn_auth_failures_total", "reason", orNone(tc.reason))
		code, _ := c.allocate(tc.username, auth.RESTPassword(testSecret, tc.username))
		if tc.ok != (code == 0) || (!tc.ok && code != 401) {
			t.Errorf("%q: code %d", tc.username, code)
		}
		if !tc.ok {
			if got := env.metric(t, "ferry_turn_auth_failures_total", "reason", tc.reason) - before; got < 1 {
				t.Errorf("%q: reason %s not counted", tc.username, tc.reason)
			}
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// C14: user ids with ':', '@' or '%' authenticate; the user id is everything after the first
// colon, for the allocation log and for per-user quotas.
func TestC14UserIDsWithColons(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.MaxAllocationsPerUser = 1 })
	for _, id := range []string{"a:b", "b:c", "a@b", "a%3Ab", "", strings.Repeat("x", 256)} {
		c := env.dial(t, "udp")
		cred := env.cred(t, id, time.Hour)
		if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
			t.Fatalf("user id %q: %d", id, code)
		}
	}
	env.sink.mu.Lock()
	var ids []string
	for _, s := range env.sink.starts {
		ids = append(ids, s.UserID)
	}
	env.sink.mu.Unlock()
	if len(ids) != 6 || ids[1] != "b:c" || ids[0] != "a:b" {
		t.Fatalf("attributed user ids: %q", ids)
	}
	// The quota key is the whole id: a second "b:c" allocation hits the per-user quota, one
	// for "b" does not.
	c := env.dial(t, "udp")
	cred := env.cred(t, "b:c", time.Hour)
	if code, _ := c.allocate(cred.Username, cred.Password); code != 486 {
		t.Fatalf("second allocation for b:c: %d, want 486", code)
	}
	c = env.dial(t, "udp")
	cred = env.cred(t, "b", time.Hour)
	if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatalf("allocation for b: %d", code)
	}
	if got := env.metric(t, "ferry_turn_quota_rejections_total", "kind", "user"); got != 1 {
		t.Fatalf("user quota rejections: %v", got)
	}
}

// C15: credentials that expire mid-call do not end it: the allocation can be refreshed and
// gain permissions and channels with the same username until the maximum allocation age;
// a new Allocate with them is refused; another username on the allocation gets 441.
func TestC15CredentialExpiryMidCall(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			echo := newUDPEcho(t, "127.0.0.2")
			echo2 := newUDPEcho(t, "127.0.0.2")
			c := env.dial(t, network)
			cred := env.cred(t, "u-0001", 60*time.Second)
			if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			if code, _ := c.do(stun.MethodCreatePermission, peerAttr{ap: echo.addr()}); code != 0 {
				t.Fatal("permission")
			}
			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.addr()}); code != 0 {
				t.Fatal("channel")
			}

			env.clock.Add(90 * time.Second) // the credential expired 30 s ago
			for _, step := range []struct {
				name  string
				m     stun.Method
				attrs []stun.Setter
			}{
				{"Refresh", stun.MethodRefresh, nil},
				{"CreatePermission", stun.MethodCreatePermission, []stun.Setter{peerAttr{ap: echo2.addr()}}},
				{"ChannelBind", stun.MethodChannelBind, []stun.Setter{chanNum(0x4001), peerAttr{ap: echo2.addr()}}},
			} {
				if code, _ := c.do(step.m, step.attrs...); code != 0 {
					t.Fatalf("%s after expiry: %d, want success", step.name, code)
				}
			}
			c.send(c.channelData(0x4001, []byte("media")))
			c.expectData(0x4001, echo2.addr(), []byte("media"))

			// A new 5-tuple with the expired credential: 401.
			fresh := env.dial(t, network)
			if code, _ := fresh.allocate(cred.Username, cred.Password); code != 401 {
				t.Fatalf("new Allocate with expired credential: %d, want 401", code)
			}
			// Another (valid) username on the existing allocation: 441.
			other := env.cred(t, "u-0002", 600*time.Second)
			saved := *c
			c.username, c.key = other.Username, auth.LongTermKey(other.Username, testRealm, other.Password)
			if code, _ := c.do(stun.MethodRefresh); code != 441 {
				t.Fatalf("Refresh with another username: %d, want 441", code)
			}
			c.username, c.key = saved.username, saved.key

			// At the maximum allocation age the allocation ends.
			env.clock.Add(12 * time.Hour)
			env.srv.Sweep()
			waitFor(t, func() bool { return env.srv.AllocationCount() == 0 })
			if code, _ := c.do(stun.MethodRefresh); code == 0 {
				t.Fatal("Refresh after the maximum age succeeded")
			}
			ends := env.sink.ended()
			if len(ends) != 1 || ends[0].Reason != EndMaxAge {
				t.Fatalf("end events: %+v", ends)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 3s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Secret rotation: a credential from the previous, still-listed secret works; one from a
// secret that is no longer listed gets 401 (counted as bad_integrity).
func TestRotatedSecret(t *testing.T) {
	mk := func(secrets ...string) *testEnv {
		return newTestEnv(t, func(c *Config) {
			a, err := auth.New(auth.Config{Secrets: secrets, MaxTTL: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			c.Auth = a
		})
	}
	old, _ := auth.New(auth.Config{Secrets: []string{"old"}, MaxTTL: 24 * time.Hour})
	cred, _ := old.Issue("u-rot", time.Hour)

	rotating := mk("new", "old")
	c := rotating.dial(t, "udp")
	if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatalf("credential from the previous secret: %d", code)
	}
	if code, _ := c.do(stun.MethodRefresh); code != 0 {
		t.Fatalf("refresh with the previous secret: %d", code)
	}
	issuer, _ := auth.New(auth.Config{Secrets: []string{"new"}, MaxTTL: 24 * time.Hour})
	fromNew, _ := issuer.Issue("u-rot2", time.Hour)
	c2 := rotating.dial(t, "tcp")
	if code, _ := c2.allocate(fromNew.Username, fromNew.Password); code != 0 {
		t.Fatalf("credential from the new secret: %d", code)
	}

	rotated := mk("new")
	c3 := rotated.dial(t, "udp")
	if code, _ := c3.allocate(cred.Username, cred.Password); code != 401 {
		t.Fatalf("credential from a removed secret: %d, want 401", code)
	}
	if got := rotated.metric(t, "ferry_turn_auth_failures_total", "reason", auth.ReasonBadIntegrity); got != 1 {
		t.Fatalf("bad_integrity failures: %v", got)
	}
}

// C19: address families. Browsers never send REQUESTED-ADDRESS-FAMILY.
func TestC19AddressFamilies(t *testing.T) {
	env := newTestEnv(t, withIPv6(t), func(c *Config) {
		c.AllowedPeers = append(c.AllowedPeers, netip.MustParsePrefix("::1/128"))
	})
	// (a) IPv4 listener, no family: IPv4 relay; an IPv6 peer is a family mismatch.
	c4, r4 := env.allocated(t, "udp", "u-c19a")
	if !r4.Addr().Is4() {
		t.Fatalf("(a) relay %s", r4)
	}
	if code, _ := c4.do(stun.MethodCreatePermission, peer("[::1]:5000")); code != 443 {
		t.Fatalf("(a) IPv6 peer on IPv4 allocation: %d, want 443", code)
	}
	// (b) IPv6 listener, no family: the listener's family (not strict).
	c6 := dialClient(t, "udp", env.udp6, "")
	cred := env.cred(t, "u-c19b", time.Hour)
	code, r6 := c6.allocate(cred.Username, cred.Password)
	if code != 0 || !r6.Addr().Is6() {
		t.Fatalf("(b) %d %s", code, r6)
	}
	// (e) Refresh with a mismatching REQUESTED-ADDRESS-FAMILY: 443.
	if code, _ := c6.do(stun.MethodRefresh, requestedFamily(1)); code != 443 {
		t.Fatalf("(e) %d, want 443", code)
	}
	// (c) explicit IPv6 over the IPv4 listener.
	cx := env.dial(t, "udp")
	cred = env.cred(t, "u-c19c", time.Hour)
	if code, r := cx.allocate(cred.Username, cred.Password, requestedFamily(2)); code != 0 || !r.Addr().Is6() {
		t.Fatalf("(c) %d %s", code, r)
	}
	// (d) ADDITIONAL-ADDRESS-FAMILY IPv6: dual allocation is not offered: IPv4 only, and
	// ADDRESS-ERROR-CODE says 440 for IPv6 (RFC 8656 §7.2), over either listener.
	for _, listener := range []net.Addr{env.udp, env.udp6} {
		cd := dialClient(t, "udp", listener, "")
		cred = env.cred(t, "u-c19d", time.Hour)
		code, rd := cd.allocate(cred.Username, cred.Password, stun.RawAttribute{Type: 0x8000, Value: []byte{2, 0, 0, 0}})
		if code != 0 || !rd.Addr().Is4() {
			t.Fatalf("(d) over %s: %d %s", listener, code, rd)
		}
		aec, err := cd.last.Get(0x8001)
		if err != nil || len(aec) < 4 || aec[0] != 0x02 || int(aec[2]&7)*100+int(aec[3]) != 440 {
			t.Fatalf("(d) over %s: ADDRESS-ERROR-CODE %x (%v), want IPv6 440", listener, aec, err)
		}
	}
	// (f) both family attributes: 400.
	cf := env.dial(t, "udp")
	cred = env.cred(t, "u-c19f", time.Hour)
	if code, _ := cf.allocate(cred.Username, cred.Password, requestedFamily(2), stun.RawAttribute{Type: 0x8000, Value: []byte{2, 0, 0, 0}}); code != 400 {
		t.Fatalf("(f) %d, want 400", code)
	}
	// Relay-to-relay over IPv6 (C06 for v6).
	if code, _ := c6.do(stun.MethodCreatePermission, peerAttr{ap: r6}); code != 0 {
		t.Fatalf("v6 self permission: %d", code)
	}
	c6.send(c6.sendIndication(peerAttr{ap: r6}, []byte("loop")))
	c6.expectData(0, r6, []byte("loop"))

	// Without IPv6 relay addresses, an explicit IPv6 request gets 440.
	v4only := newTestEnv(t)
	c := v4only.dial(t, "udp")
	cred = v4only.cred(t, "u-c19g", time.Hour)
	if code, _ := c.allocate(cred.Username, cred.Password, requestedFamily(2)); code != 440 {
		t.Fatalf("IPv6 without IPv6 relay: %d, want 440", code)
	}
}

// C20: behind 1:1 NAT, XOR-RELAYED-ADDRESS carries the advertised address per family with the
// port preserved, while XOR-MAPPED-ADDRESS is the client's real source.
func TestC20AdvertisedAddresses(t *testing.T) {
	env := newTestEnv(t, withIPv6(t), func(c *Config) {
		c.AdvertisedIPv4 = netip.MustParseAddr("203.0.113.10")
		c.AdvertisedIPv6 = netip.MustParseAddr("2001:db8::10")
		c.PortMin, c.PortMax = 61100, 61199
	})
	lc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.5")})
	if err != nil {
		t.Fatal(err)
	}
	local := lc.LocalAddr().String()
	lc.Close()
	c := dialClient(t, "udp", env.udp, local)
	cred := env.cred(t, "u-c20", time.Hour)
	code, relayed := c.allocate(cred.Username, cred.Password)
	if code != 0 || relayed.Addr().String() != "203.0.113.10" || relayed.Port() < 61100 || relayed.Port() > 61199 {
		t.Fatalf("IPv4 relayed %s (%d)", relayed, code)
	}
	r, err := c.transact(c.build(stun.MethodBinding))
	if err != nil {
		t.Fatal(err)
	}
	var mapped stun.XORMappedAddress
	if err := mapped.GetFrom(r); err != nil || mapped.String() != local {
		t.Fatalf("XOR-MAPPED-ADDRESS %s, want %s", mapped.String(), local)
	}
	c6 := dialClient(t, "udp", env.udp6, "")
	cred = env.cred(t, "u-c20-6", time.Hour)
	code, r6 := c6.allocate(cred.Username, cred.Password)
	if code != 0 || r6.Addr().String() != "2001:db8::10" {
		t.Fatalf("IPv6 relayed %s (%d)", r6, code)
	}
}
