package listen

import (
	"net/netip"

	"github.com/ferryrelay/ferry/internal/mmsg"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// clientBuf is the room for one client datagram; a longer one is dropped as too_large (TURN
// messages and media from browsers are far smaller).
const clientBuf = 4096

// udpReader reads client datagrams from listener sockets and dispatches them: it belongs to
// one goroutine (an event loop, or the reader of one socket), so the state is not shared.
type udpReader struct {
	l      *Listeners
	r      *mmsg.Reader
	in     *mmsg.Batch
	ob     *alloc.Outbox
	poller alloc.Poller // the event loop the reader runs in; nil for a goroutine per socket
}

func newUDPReader(l *Listeners, p alloc.Poller) *udpReader {
	return &udpReader{l: l, r: mmsg.NewReader(), in: mmsg.NewBatch(alloc.BatchSize, clientBuf),
		ob: l.cfg.Table.NewOutbox(), poller: p}
}

// batch dispatches the n datagrams just read from sock, whose local address is local, and
// sends the data they carry for peers grouped by allocation.
func (u *udpReader) batch(sock *alloc.Socket, local netip.AddrPort, n int) {
	for i := 0; i < n; i++ {
		if u.in.Trunc[i] {
			u.l.cfg.Stats.Drop(stats.DropTooLarge)
			continue
		}
		u.handle(sock, local, u.in.Bufs[i][:u.in.Lens[i]], u.in.Addrs[i])
	}
	u.ob.Flush()
}

// handle dispatches one datagram from a client (RFC 7983 demultiplexing): ChannelData and
// Send indications to the data path (into the outbox; batch flushes it), everything else
// to the control plane.
func (u *udpReader) handle(sock *alloc.Socket, local netip.AddrPort, pkt []byte, src netip.AddrPort) {
	cfg := &u.l.cfg
	kind, size, plen := wire.NextFrame(pkt, false)
	key := alloc.Key{Transport: wire.UDP, Client: src, Server: local}
	switch {
	case kind == wire.FrameChannelData:
		a := cfg.Table.Lookup(key)
		if a == nil {
			cfg.Stats.Drop(stats.DropNoAllocation)
			return
		}
		u.ob.ChannelData(a, wire.Be16(pkt), pkt[wire.ChannelHeaderLen:wire.ChannelHeaderLen+plen])
	case kind != wire.FrameSTUN || size != len(pkt):
		cfg.Stats.Drop(stats.DropMalformed) // short ChannelData (C09), garbage, or not one whole message
	case wire.Be16(pkt) == wire.TypeSendIndication:
		a := cfg.Table.Lookup(key)
		if a == nil {
			cfg.Stats.Drop(stats.DropNoAllocation)
			return
		}
		u.ob.SendIndication(a, pkt)
	default:
		u.ob.Flush() // keep a client's data and control in order
		cfg.Control.Handle(pkt, &control.Source{Key: key,
			Client: alloc.Client{UDP: sock, Addr: src, Poller: u.poller},
			Reply:  func(b []byte) { _ = sock.SendTo(b, src) }})
	}
}

// udpEngine serves the UDP listener sockets: event loops on Linux, goroutines elsewhere.
type udpEngine interface {
	close() error            // stop serving: unblock and end the goroutines
	release() error          // close what is left, once the goroutines have ended
	addrs() []netip.AddrPort // the listen addresses
}
