package control

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	realm  = "ferry"
	secret = "test-secret"
)

// harness is a control plane over a real table on 127.0.0.1, answering into a slice.
type harness struct {
	h        *Handler
	table    *alloc.Table
	auth     *auth.Authenticator
	listener *alloc.Socket
	now      time.Time
	answers  [][]byte
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	st, err := stats.New(prometheus.NewRegistry(), true)
	if err != nil {
		t.Fatal(err)
	}
	x := &harness{now: time.Unix(1_800_000_000, 0)}
	now := func() time.Time { return x.now }
	x.auth, err = auth.New(auth.Config{Secrets: []string{secret}, MaxTTL: 24 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	x.table, err = alloc.NewTable(alloc.Config{RelayIPv4: netip.MustParseAddr("127.0.0.1"), PortMin: 63200, PortMax: 64199,
		Policy:           policy.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, nil, nil, nil),
		MaxAllocationAge: 12 * time.Hour, Stats: st, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.table.Close)
	x.h, err = New(Config{Realm: realm, Auth: x.auth, Table: x.table, Stats: st, Limits: Limits{UnauthRate: -1}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if x.listener, err = alloc.NewSocket(c); err != nil {
		t.Fatal(err)
	}
	return x
}

// source is a UDP client at client.
func (x *harness) source(client netip.AddrPort) *Source {
	return &Source{Key: alloc.Key{Transport: wire.UDP, Client: client, Server: x.listener.Conn().LocalAddr().(*net.UDPAddr).AddrPort()},
		Client: alloc.Client{UDP: x.listener, Addr: client},
		Reply:  func(b []byte) { x.answers = append(x.answers, append([]byte(nil), b...)) }}
}

// last decodes the last answer.
func (x *harness) last(t testing.TB) *stun.Message {
	t.Helper()
	if len(x.answers) == 0 {
		t.Fatal("no answer")
	}
	m := &stun.Message{Raw: x.answers[len(x.answers)-1]}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	return m
}

func code(m *stun.Message) int {
	var ec stun.ErrorCodeAttribute
	if m.Type.Class != stun.ClassErrorResponse || ec.GetFrom(m) != nil {
		return 0
	}
	return int(ec.Code)
}

// credentials signs requests from one user.
type credentials struct {
	username, nonce string
	key             []byte
}

func (x *harness) credentials(t testing.TB, client netip.Addr) credentials {
	t.Helper()
	c, err := x.auth.Issue("u", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return credentials{username: c.Username, nonce: x.h.nonces.issue(client, x.now),
		key: auth.LongTermKey(c.Username, realm, c.Password)}
}

func (c credentials) request(t testing.TB, method stun.Method, attrs ...stun.Setter) []byte {
	t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	setters = append(setters, stun.NewUsername(c.username), stun.NewRealm(realm), stun.NewNonce(c.nonce),
		stun.MessageIntegrity(c.key))
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

var udpTransport = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

// Nonces are bound to the client's address and expire after their lifetime; one never
// issued, or tampered with, is not valid.
func TestNonces(t *testing.T) {
	n := newNonces(time.Hour)
	now := time.Unix(1_800_000_000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	na := n.issue(a, now)
	if len(na) != nonceLen {
		t.Fatalf("nonce %q: %d characters", na, len(na))
	}
	tampered := na[:nonceLen-1] + "A"
	if na[nonceLen-1] == 'A' {
		tampered = na[:nonceLen-1] + "B"
	}
	for _, tc := range []struct {
		nonce  string
		client netip.Addr
		at     time.Time
		want   nonceState
	}{
		{na, a, now, nonceValid},
		{na, a, now.Add(time.Hour - time.Second), nonceValid},
		{na, a, now.Add(time.Hour), nonceStale},
		{na, b, now, nonceForged},
		{na, netip.MustParseAddr("::ffff:192.0.2.1"), now, nonceValid},
		{tampered, a, now, nonceForged},
		{na, a, now.Add(96 * 24 * time.Hour), nonceStale},
		{na, a, now.Add(98 * 24 * time.Hour), nonceForged},      // 3 bytes of expiry wrapped around
		{n.issue(a, now.Add(2*time.Hour)), a, now, nonceForged}, // further ahead than issued
		{"forged", a, now, nonceForged},
		{"", a, now, nonceForged},
		{newNonces(time.Hour).issue(a, now), a, now, nonceForged}, // another process's key
	} {
		if got := n.check(tc.nonce, tc.client, tc.at); got != tc.want {
			t.Errorf("nonce %q for %s at +%s: %d, want %d", tc.nonce, tc.client, tc.at.Sub(now), got, tc.want)
		}
	}
}

// An Allocate allocates a bounded amount of memory on the control path (decode, checks,
// answer, allocation record), and a Refresh that deletes it likewise. The numbers guard
// against regressions; BenchmarkAllocate reports bytes.
func TestAllocateAllocations(t *testing.T) {
	x := newHarness(t)
	const runs = 200
	var allocs, deletes [][]byte
	var srcs []*Source
	for i := range runs + 1 {
		client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), uint16(20000+i))
		c := x.credentials(t, client.Addr())
		allocs = append(allocs, c.request(t, stun.MethodAllocate, udpTransport))
		deletes = append(deletes, c.request(t, stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}))
		srcs = append(srcs, x.source(client))
	}
	x.answers = make([][]byte, 0, 4*runs)
	i := 0
	perAllocate := testing.AllocsPerRun(runs, func() {
		x.h.Handle(allocs[i], srcs[i])
		i++
	})
	if got := code(x.last(t)); got != 0 || x.table.Count() != runs+1 {
		t.Fatalf("Allocate: %d, %d allocations", got, x.table.Count())
	}
	i = 0
	perDelete := testing.AllocsPerRun(runs, func() {
		x.h.Handle(deletes[i], srcs[i])
		i++
	})
	if x.table.Count() != 0 {
		t.Fatalf("%d allocations left", x.table.Count())
	}
	t.Logf("heap allocations: %.0f per Allocate, %.0f per deleting Refresh", perAllocate, perDelete)
	if !raceEnabled && (perAllocate > 60 || perDelete > 30) {
		t.Errorf("heap allocations: %.0f per Allocate (budget 60), %.0f per deleting Refresh (budget 30)", perAllocate, perDelete)
	}
}

// BenchmarkAllocate measures the control plane's CPU and memory for one authenticated
// Allocate and the Refresh that deletes it (the relay socket's bind and close included).
func BenchmarkAllocate(b *testing.B) {
	x := newHarness(b)
	const clients = 1000
	type pair struct {
		alloc, del []byte
		src        *Source
	}
	pairs := make([]pair, clients)
	for i := range pairs {
		client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), uint16(20000+i))
		c := x.credentials(b, client.Addr())
		pairs[i] = pair{c.request(b, stun.MethodAllocate, udpTransport),
			c.request(b, stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}),
			x.source(client)}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := pairs[i%clients]
		x.h.Handle(p.alloc, p.src)
		x.h.Handle(p.del, p.src)
		x.answers = x.answers[:0]
	}
}
