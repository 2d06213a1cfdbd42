//go:build linux

package listen

import (
	"net"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// An event loop's read of a listener socket allocates nothing per wakeup: from the read to
// the relayed datagram (its read function is bound once; a closure per read allocated).
func TestEventLoopReadAllocatesNothing(t *testing.T) {
	l, sink := newTestListeners(t)
	table := l.cfg.Table
	e, err := newEventLoop(l)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.release() }()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.addListener(c); err != nil {
		t.Fatal(err)
	}
	client, err := net.DialUDP("udp4", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	from := client.LocalAddr().(*net.UDPAddr).AddrPort()
	al, _, err := table.Create(alloc.Request{Key: alloc.Key{Transport: wire.UDP, Client: from, Server: e.local[0]},
		Username: "1:u", UserID: "u", Client: alloc.Client{UDP: e.socks[0], Addr: from}, Family: 4, Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	table.BindChannel(al, 0x4000, sink.LocalAddr().(*net.UDPAddr).AddrPort(), policy.Local, time.Minute, time.Minute, 8, 8)
	frame := append([]byte{0x40, 0x00, 0x00, 100}, make([]byte, 100)...)
	send := func() {
		if _, err := client.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	base := testing.AllocsPerRun(100, send)
	for e.readListener(0); e.got > 0; e.readListener(0) { // what the baseline queued
	}
	if n := testing.AllocsPerRun(1000, func() { send(); e.readListener(0) }); n > base {
		t.Errorf("%v allocations per listener read (the client's send alone: %v)", n-base, base)
	}
	if _, p := al.Traffic(stats.ToPeer); p < 1000 {
		t.Fatalf("relayed %d packets to the peer, want 1000 or more", p)
	}
}
