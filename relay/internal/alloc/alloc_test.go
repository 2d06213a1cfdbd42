package alloc

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// clock is a fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a table relaying on 127.0.0.1 for one client, with 127.0.0.2 allowed as peer.
type fixture struct {
	t        *Table
	clock    *clock
	listener *Socket      // the listener socket the client talks to
	client   *net.UDPConn // the client
	sink     *net.UDPConn // a peer on 127.0.0.2
	stats    *stats.Relay
	reg      *prometheus.Registry
}

func newFixture(t testing.TB, mutate ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{t: time.Unix(1_800_000_000, 0)}, reg: prometheus.NewRegistry()}
	st, err := stats.New(f.reg, true)
	if err != nil {
		t.Fatal(err)
	}
	f.stats = st
	cfg := Config{Realm: "ferry.test", RelayIPv4: netip.MustParseAddr("127.0.0.1"), PortMin: 62000, PortMax: 62999,
		Policy: policy.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, nil,
			[]netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil),
		MaxAllocationAge: 12 * time.Hour, Stats: st, Now: f.clock.Now}
	for _, m := range mutate {
		m(&cfg)
	}
	if f.t, err = NewTable(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.t.Close)
	f.listener = udpSocket(t, "127.0.0.1")
	c, err := net.DialUDP("udp4", nil, f.listener.Conn().LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f.client = c
	f.sink = udpSocket(t, "127.0.0.2").Conn()
	return f
}

func udpSocket(t testing.TB, ip string) *Socket {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s, err := NewSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// allocate creates an allocation for the fixture's client with a channel to the sink.
func (f *fixture) allocate(t testing.TB) *Allocation {
	t.Helper()
	client := addrOf(f.client)
	a, _, err := f.t.Create(Request{Key: Key{Transport: wire.UDP, Client: client, Server: addrOf(f.listener.Conn())},
		Username: "1:u", UserID: "u", Client: Client{UDP: f.listener, Addr: client}, Family: 4, Lifetime: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res := f.t.BindChannel(a, 0x4000, addrOf(f.sink), policy.Local, 10*time.Minute, 5*time.Minute, 64, 64); res != ChannelBound {
		t.Fatalf("bind: %v", res)
	}
	return a
}

// The data path allocates nothing per packet: ChannelData and Send indications from a client
// (listener to relay socket) and datagrams from peers (relay socket to client), counted.
func TestDataPathAllocatesNothing(t *testing.T) {
	f := newFixture(t)
	a := f.allocate(t)
	go drain(f.sink)
	go drain(f.client)
	payload := make([]byte, 100)
	ob := f.t.NewOutbox()
	if n := testing.AllocsPerRun(1000, func() { ob.ChannelData(a, 0x4000, payload); ob.Flush() }); n != 0 {
		t.Errorf("client -> peer (ChannelData): %v allocations per packet", n)
	}
	send, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		XORAddr(stun.AttrXORPeerAddress, addrOf(f.sink)), stun.RawAttribute{Type: stun.AttrData, Value: payload})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { ob.SendIndication(a, send.Raw); ob.Flush() }); n != 0 {
		t.Errorf("client -> peer (Send indication): %v allocations per packet", n)
	}
	if n := testing.AllocsPerRun(200, func() {
		for range 8 {
			ob.ChannelData(a, 0x4000, payload)
		}
		ob.Flush()
	}); n != 0 {
		t.Errorf("client -> peer (a batch of 8): %v allocations per batch", n)
	}
	pr := newPeerReader(f.t)
	other := netip.AddrPortFrom(addrOf(f.sink).Addr(), addrOf(f.sink).Port()+1)
	for _, from := range []netip.AddrPort{addrOf(f.sink), other} { // ChannelData, Data indication
		for i := range 4 {
			pr.in.Lens[i], pr.in.Addrs[i], pr.in.Trunc[i] = 100, from, false
		}
		if n := testing.AllocsPerRun(1000, func() { pr.deliver(a, 4) }); n != 0 {
			t.Errorf("peer %s -> client: %v allocations per batch", from, n)
		}
	}
	// Relay to relay, the short way: a's client sends to b's relayed address.
	c2, err := net.DialUDP("udp4", nil, f.listener.Conn().LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	go drain(c2)
	k2 := Key{Transport: wire.UDP, Client: addrOf(c2), Server: addrOf(f.listener.Conn())}
	b, _, err := f.t.Create(Request{Key: k2, Username: "1:v", UserID: "v", Client: Client{UDP: f.listener, Addr: k2.Client},
		Family: 4, Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]*Allocation{{a, b}, {b, a}} {
		if !f.t.Permit(p[0], []netip.Addr{p[1].Relayed.Addr()}, []policy.Class{policy.RelayOnly}, time.Minute, 64) {
			t.Fatal("permit")
		}
	}
	toB, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		XORAddr(stun.AttrXORPeerAddress, b.Relayed), stun.RawAttribute{Type: stun.AttrData, Value: payload})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { ob.SendIndication(a, toB.Raw); ob.Flush() }); n != 0 {
		t.Errorf("relay to relay: %v allocations per packet", n)
	}
	if _, p := b.Traffic(stats.ToClient); p < 1000 {
		t.Fatalf("relay to relay delivered %d packets", p)
	}
	if _, p := a.Traffic(stats.ToPeer); p < 2000+8*200 {
		t.Fatalf("the measured calls relayed only %d packets to the peer", p)
	}
	if _, p := a.Traffic(stats.ToClient); p < 8000 {
		t.Fatalf("the measured calls relayed only %d packets to the client", p)
	}
}

func drain(c *net.UDPConn) {
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// Allocation ids grow within a process, even when the clock steps back, and stay positive
// int64 values (the allocation log's primary key).
func TestAllocationIDsGrow(t *testing.T) {
	f := newFixture(t)
	var prev uint64
	for i := range 5000 {
		if i == 2500 {
			f.clock.Add(-time.Hour)
		}
		id := f.t.nextID(f.clock.Now())
		if id <= prev || id >= 1<<63 {
			t.Fatalf("id %d after %d", id, prev)
		}
		prev = id
	}
	if first := uint64(f.clock.Now().Add(time.Hour).UnixMilli()) << 20; prev < first {
		t.Fatalf("ids %d do not carry the start time %d", prev, first)
	}
}

// Permissions and channel bindings expire on the table's clock: the sweep removes them (and
// the data path then drops), while a refreshed one stays.
func TestPermissionsExpire(t *testing.T) {
	f := newFixture(t)
	a := f.allocate(t)
	a.SetLifetime(f.clock.Now(), time.Hour)
	peer2 := netip.MustParseAddr("127.0.0.2")
	if a.permission(peer2) == 0 || a.ChannelCount() != 1 {
		t.Fatal("no permission or channel after ChannelBind")
	}
	f.clock.Add(4 * time.Minute)
	f.t.Permit(a, []netip.Addr{peer2}, []policy.Class{policy.Local}, 5*time.Minute, 64) // refresh
	f.clock.Add(2 * time.Minute)                                                        // 6 min: the first one would be gone
	f.t.Sweep()
	if a.permission(peer2) == 0 {
		t.Fatal("a refreshed permission expired")
	}
	f.clock.Add(5 * time.Minute) // channel (10 min) and permission (refreshed at 4, +5) are both due
	f.t.Sweep()
	if a.permission(peer2) != 0 || a.ChannelCount() != 0 {
		t.Fatalf("permission %v, %d channels after their lifetimes", a.permission(peer2), a.ChannelCount())
	}
	ob := f.t.NewOutbox()
	before := testValue(t, f.reg, "ferry_turn_dropped_packets_total", "no_channel")
	ob.ChannelData(a, 0x4000, []byte("x"))
	ob.Flush()
	if testValue(t, f.reg, "ferry_turn_dropped_packets_total", "no_channel") != before+1 {
		t.Fatal("data on an expired channel was not dropped")
	}
}

// testValue reads a counter or gauge with one label value.
func testValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					if m.Counter != nil {
						return m.Counter.GetValue()
					}
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return 0
}

// EVEN-PORT with R reserves the next port for 30 s under a token; an Allocate with the
// token gets that port once; an unknown or expired token gets nothing (RFC 8656 §7.2).
func TestPortReservation(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.PortMin, c.PortMax = 63100, 63103 })
	client := addrOf(f.client)
	key := func(port uint16) Key {
		return Key{Transport: wire.UDP, Client: netip.AddrPortFrom(client.Addr(), port), Server: addrOf(f.listener.Conn())}
	}
	req := func(k Key) Request {
		return Request{Key: k, Username: "1:u", UserID: "u", Client: Client{UDP: f.listener, Addr: k.Client},
			Family: 4, Lifetime: time.Minute}
	}
	r := req(key(1))
	r.EvenPort, r.ReserveNext = true, true
	a, tok, err := f.t.Create(r)
	if err != nil || a.Relayed.Port()%2 != 0 {
		t.Fatalf("EVEN-PORT R: %v %v", a, err)
	}
	r = req(key(2))
	r.Token = tok[:]
	b, _, err := f.t.Create(r)
	if err != nil || b.Relayed.Port() != a.Relayed.Port()+1 {
		t.Fatalf("RESERVATION-TOKEN: %v, port %v after %v", err, b, a.Relayed)
	}
	if _, _, err := f.t.Create(r); err != ErrToken {
		t.Fatalf("a token used twice: %v", err)
	}
	r = req(key(3))
	r.EvenPort, r.ReserveNext = true, true
	_, tok, err = f.t.Create(r)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Add(ReservationLifetime)
	f.t.Sweep()
	r = req(key(4))
	r.Token = tok[:]
	if _, _, err := f.t.Create(r); err != ErrToken {
		t.Fatalf("an expired token: %v", err)
	}
}
