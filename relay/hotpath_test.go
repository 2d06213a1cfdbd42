package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// hotPath sets up one UDP allocation with a channel bound to a sink peer, and returns the
// listener, the client's address, a ChannelData frame and the allocation.
func hotPath(t testing.TB, mutate ...func(*Config)) (*testEnv, *udpListener, *stunClient, *net.UDPConn, *alloc) {
	t.Helper()
	env := newTestEnv(t, mutate...)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	c, _ := env.allocated(t, "udp", "u-hot")
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: sink.LocalAddr().(*net.UDPAddr).AddrPort()}); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	l := env.srv.udp[0]
	src := c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	a := l.allocs.get(src)
	if a == nil {
		t.Fatal("no allocation")
	}
	return env, l, c, sink, a
}

// The data path allocates nothing per packet: ChannelData and Send indications from the client
// (listener -> relay socket) and datagrams from the peer (relay socket -> client), with
// metrics counting.
func TestHotPathZeroAllocations(t *testing.T) {
	env, l, c, sink, a := hotPath(t)
	go func() { // drain the sink so its buffer never fills
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	src := c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	frame := c.channelData(0x4000, make([]byte, 100))
	sock := l.socks[0]
	ob := newOutbox(true)
	if n := testing.AllocsPerRun(1000, func() { l.handle(sock, frame, src, ob); ob.flush(env.srv) }); n != 0 {
		t.Errorf("client -> peer (ChannelData): %v allocations per packet", n)
	}
	peer := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	send := c.sendIndication(peerAttr{ap: peer}, make([]byte, 100))
	if n := testing.AllocsPerRun(1000, func() { l.handle(sock, send, src, ob); ob.flush(env.srv) }); n != 0 {
		t.Errorf("client -> peer (Send indication): %v allocations per packet", n)
	}
	// A batch of 8 from one client: one sendmmsg (or GSO send).
	if n := testing.AllocsPerRun(200, func() {
		for range 8 {
			l.handle(sock, frame, src, ob)
		}
		ob.flush(env.srv)
	}); n != 0 {
		t.Errorf("client -> peer (batch of 8): %v allocations per batch", n)
	}
	pr := newPeerReader(true)
	other := netip.AddrPortFrom(peer.Addr(), peer.Port()+1)
	for _, tc := range []struct {
		name string
		from netip.AddrPort
	}{{"ChannelData", peer}, {"Data indication", other}} {
		for i := range 4 {
			pr.in.Lens[i], pr.in.Addrs[i], pr.in.Trunc[i] = 100, tc.from, false
		}
		if n := testing.AllocsPerRun(1000, func() { env.srv.deliverFromPeers(a, pr, 4) }); n != 0 {
			t.Errorf("peer -> client (%s): %v allocations per batch", tc.name, n)
		}
	}
	if got := a.packets[toPeer].Load(); got < 2000 {
		t.Fatalf("the measured calls relayed only %d packets to the peer", got)
	}
	if got := a.packets[toClient].Load(); got < 4000 {
		t.Fatalf("the measured calls relayed only %d packets to the client", got)
	}
}

// BenchmarkRelayRoundTrip relays 100-byte ChannelData through Ferry to an echo peer and back,
// 16 packets in flight, with and without the per-packet metrics: the pair measures what
// counting costs (target: within 3 %).
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, metrics := range []bool{true, false} {
		name := "metrics=on"
		if !metrics {
			name = "metrics=off"
		}
		b.Run(name, func(b *testing.B) { benchRoundTrip(b, !metrics) })
	}
}

func benchRoundTrip(b *testing.B, noMetrics bool) {
	env := newTestEnv(b, func(c *Config) { c.NoPacketMetrics = noMetrics })
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], a)
		}
	}()
	c := dialClient(b, "udp", env.udp, "")
	cred, _ := env.auth.Issue("bench", time.Hour)
	code, _ := c.allocate(cred.Username, cred.Password)
	if code != 0 {
		b.Fatalf("allocate: %d", code)
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.LocalAddr().(*net.UDPAddr).AddrPort()}); code != 0 {
		b.Fatalf("ChannelBind: %d", code)
	}
	frame := c.channelData(0x4000, make([]byte, 100))
	conn := c.conn.(*net.UDPConn)
	buf := make([]byte, 2048)
	const window = 16
	b.SetBytes(100)
	b.ResetTimer()
	inflight := 0
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		inflight++
		if inflight == window {
			conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := conn.Read(buf); err != nil {
				b.Fatalf("lost packets: %v", err)
			}
			inflight--
		}
	}
	for ; inflight > 0; inflight-- {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(buf); err != nil {
			b.Fatalf("lost packets: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}
