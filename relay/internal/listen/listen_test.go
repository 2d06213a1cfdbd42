package listen

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// newTestListeners returns Listeners over a fresh table and control plane (no sockets), and a
// peer on 127.0.0.2 that reads and discards what it gets.
func newTestListeners(t *testing.T) (*Listeners, *net.UDPConn) {
	t.Helper()
	st, err := stats.New(prometheus.NewRegistry(), true)
	if err != nil {
		t.Fatal(err)
	}
	table, err := alloc.NewTable(alloc.Config{RelayIPv4: netip.MustParseAddr("127.0.0.1"), PortMin: 64200, PortMax: 64699,
		Policy:           policy.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, nil, nil, nil),
		MaxAllocationAge: time.Hour, Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(table.Close)
	a, _ := auth.New(auth.Config{Secrets: []string{"0123456789abcdef"}, MaxTTL: time.Hour})
	ctrl, err := control.New(control.Config{Realm: "r", Auth: a, Table: table, Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { _ = sink.Close(); <-done })
	return &Listeners{cfg: Config{Table: table, Control: ctrl, Stats: st}}, sink
}

// A client's ChannelData is dispatched and relayed without allocating: the reader's lookup
// by 5-tuple, the outbox and the send.
func TestDispatchAllocatesNothing(t *testing.T) {
	l, sink := newTestListeners(t)
	table := l.cfg.Table
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sock, err := alloc.NewSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	key := alloc.Key{Transport: wire.UDP, Client: client, Server: local}
	al, _, err := table.Create(alloc.Request{Key: key, Username: "1:u", UserID: "u",
		Client: alloc.Client{UDP: sock, Addr: client}, Family: 4, Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	table.BindChannel(al, 0x4000, sink.LocalAddr().(*net.UDPAddr).AddrPort(), policy.Local, time.Minute, time.Minute, 8, 8)
	u := newUDPReader(l, nil)
	frame := append([]byte{0x40, 0x00, 0x00, 100}, make([]byte, 100)...)
	if n := testing.AllocsPerRun(1000, func() {
		u.handle(sock, local, frame, client)
		u.ob.Flush()
	}); n != 0 {
		t.Errorf("%v allocations per ChannelData", n)
	}
	if _, p := al.Traffic(stats.ToPeer); p < 1000 {
		t.Fatalf("relayed %d packets", p)
	}
}
