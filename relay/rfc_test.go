package relay

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/stun/v4"
)

// grantedLifetime returns the LIFETIME of a success response, in seconds.
func grantedLifetime(t *testing.T, m *stun.Message) uint32 {
	t.Helper()
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		t.Fatalf("no LIFETIME in %v", m)
	}
	return binary.BigEndian.Uint32(v)
}

// LIFETIME (RFC 8656 §7.2, §7.3): the granted lifetime is the requested one capped at 3600 s
// and never below the default 600 s; 0 on Allocate gets the default, 0 on Refresh deletes.
// The allocation lives exactly as long as granted, by the injected clock.
func TestLifetimeTable(t *testing.T) {
	cases := []struct {
		requested      uint32
		allocate, refr uint32 // granted; refresh 0 means deleted
	}{
		{0, 600, 0}, {1, 600, 600}, {599, 600, 600}, {600, 600, 600},
		{1800, 1800, 1800}, {3600, 3600, 3600}, {7200, 3600, 3600},
	}
	env := newTestEnv(t)
	for _, tc := range cases {
		c := env.dial(t, "udp")
		cred := env.cred(t, "u-life", time.Hour)
		code, _ := c.allocate(cred.Username, cred.Password, lifetime(tc.requested))
		if code != 0 {
			t.Fatalf("Allocate LIFETIME %d: %d", tc.requested, code)
		}
		if got := grantedLifetime(t, c.last); got != tc.allocate {
			t.Errorf("Allocate LIFETIME %d: granted %d, want %d", tc.requested, got, tc.allocate)
		}
		code, resp := c.do(stun.MethodRefresh, lifetime(tc.requested))
		if code != 0 {
			t.Fatalf("Refresh LIFETIME %d: %d", tc.requested, code)
		}
		if got := grantedLifetime(t, resp); got != tc.refr {
			t.Errorf("Refresh LIFETIME %d: granted %d, want %d", tc.requested, got, tc.refr)
		}
		before := env.srv.AllocationCount()
		if tc.refr == 0 {
			if before != 0 {
				t.Errorf("Refresh LIFETIME 0 left %d allocations", before)
			}
			continue
		}
		env.clock.Add(time.Duration(tc.refr)*time.Second - time.Second)
		env.srv.Sweep()
		if n := env.srv.AllocationCount(); n != 1 {
			t.Fatalf("LIFETIME %d: ended a second early (%d left)", tc.requested, n)
		}
		env.clock.Add(time.Second)
		env.srv.Sweep()
		if n := env.srv.AllocationCount(); n != 0 {
			t.Fatalf("LIFETIME %d: still alive after %d s", tc.requested, tc.refr)
		}
	}
}

// An expired nonce gets 438 with a fresh nonce and the realm (RFC 8489 §9.2.4); the retry
// with it succeeds, and the allocation is unharmed. The lifetime is configurable.
func TestNonceExpiry(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.NonceLifetime = 5 * time.Second })
	c, _ := env.allocated(t, "udp", "u-nonce")
	old := c.nonce
	env.clock.Add(6 * time.Second)
	r, err := c.transact(c.build(stun.MethodRefresh))
	if err != nil || errCode(r) != 438 {
		t.Fatalf("expired nonce: %v %v, want 438", r, err)
	}
	var n stun.Nonce
	var realm stun.Realm
	if n.GetFrom(r) != nil || realm.GetFrom(r) != nil || realm.String() != testRealm || n.String() == old {
		t.Fatalf("438 without a fresh NONCE and the REALM: %v", r)
	}
	c.nonce = n.String()
	if code, _ := c.do(stun.MethodRefresh); code != 0 {
		t.Fatalf("retry with the fresh nonce: %d", code)
	}
	// Nonces work from every port of the client's address, not just the one they were
	// issued to (a browser's candidates share them), but not from another address.
	other := dialClient(t, "udp", env.udp, "127.0.0.66:0")
	other.username, other.realm, other.key, other.nonce = c.username, c.realm, c.key, c.nonce
	r, err = other.transact(other.build(stun.MethodAllocate, udpTransport))
	if err != nil || errCode(r) != 438 {
		t.Fatalf("another address's nonce: %v %v, want 438", r, err)
	}
}

// While any port of a small relay range is free an Allocate gets one; with all ten taken
// the next gets 508; when one is freed the next Allocate gets exactly that one.
func TestPortRangeOfTen(t *testing.T) {
	lo, hi := freePorts(t, 10)
	env := newTestEnv(t, func(c *Config) { c.PortMin, c.PortMax = lo, hi; c.MaxAllocationsPerUser = -1 })
	var clients []*stunClient
	var ports []uint16
	used := map[uint16]bool{}
	for i := range 10 {
		c, relayed := env.allocated(t, "udp", "u-port")
		if used[relayed.Port()] || relayed.Port() < lo || relayed.Port() > hi {
			t.Fatalf("allocation %d got port %d", i, relayed.Port())
		}
		used[relayed.Port()] = true
		clients, ports = append(clients, c), append(ports, relayed.Port())
	}
	c := env.dial(t, "udp")
	cred := env.cred(t, "u-port", time.Hour)
	if code, _ := c.allocate(cred.Username, cred.Password); code != 508 {
		t.Fatalf("eleventh allocation on ten ports: %d, want 508", code)
	}
	if code, _ := clients[3].do(stun.MethodRefresh, lifetime(0)); code != 0 {
		t.Fatal("delete")
	}
	c = env.dial(t, "udp")
	code, relayed := c.allocate(cred.Username, cred.Password)
	if code != 0 || relayed.Port() != ports[3] {
		t.Fatalf("allocation after port %d was freed: %d, port %d", ports[3], code, relayed.Port())
	}
	if n := env.srv.AllocationCount(); n != 10 {
		t.Fatalf("%d allocations", n)
	}
}

// A peer of the other address family gets 443, for CreatePermission and ChannelBind alike
// (RFC 8656 §9.2, §12.2), on IPv4 and IPv6 allocations. (The peer policy speaks first: a
// denied peer gets 403 whatever its family, C01.)
func TestPeerFamilyMismatch(t *testing.T) {
	env := newTestEnv(t, withIPv6(t), func(c *Config) {
		c.AllowedPeers = append(c.AllowedPeers, netip.MustParsePrefix("2001:db8:1::1/128"))
	})
	c4, _ := env.allocated(t, "udp", "u-fam4")
	c6 := dialClient(t, "udp", env.udp6, "")
	cred := env.cred(t, "u-fam6", time.Hour)
	if code, _ := c6.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatal("IPv6 allocation")
	}
	for _, tc := range []struct {
		c    *stunClient
		peer peerAttr
	}{{c4, peer("[2001:db8:1::1]:5000")}, {c6, peer("127.0.0.2:5000")}} {
		if code, _ := tc.c.do(stun.MethodCreatePermission, tc.peer); code != 443 {
			t.Errorf("CreatePermission %s: %d, want 443", tc.peer.ap, code)
		}
		if code, _ := tc.c.do(stun.MethodChannelBind, chanNum(0x4000), tc.peer); code != 443 {
			t.Errorf("ChannelBind %s: %d, want 443", tc.peer.ap, code)
		}
	}
}

// The user id of a TURN REST username is capped at auth.MaxUserIDLen bytes, as the HTTP
// endpoint's user parameter is: 256 bytes authenticate, 257 get 401 (malformed).
func TestUserIDLengthLimit(t *testing.T) {
	env := newTestEnv(t)
	mint := func(user string) (string, string) {
		name := strings.TrimSuffix(env.cred(t, "x", time.Hour).Username, ":x") + ":" + user
		return name, auth.RESTPassword(testSecret, name)
	}
	c := env.dial(t, "udp")
	if code, _ := c.allocate(mint(strings.Repeat("a", auth.MaxUserIDLen))); code != 0 {
		t.Fatalf("a %d-byte user id: %d", auth.MaxUserIDLen, code)
	}
	c = env.dial(t, "udp")
	if code, _ := c.allocate(mint(strings.Repeat("a", auth.MaxUserIDLen+1))); code != 401 {
		t.Fatalf("a %d-byte user id: %d, want 401", auth.MaxUserIDLen+1, code)
	}
	if got := env.metric(t, "ferry_turn_auth_failures_total", "reason", auth.ReasonMalformed); got != 1 {
		t.Fatalf("malformed failures: %v", got)
	}
}
