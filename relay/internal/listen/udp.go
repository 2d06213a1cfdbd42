package listen

import (
	"errors"
	"net"
	"net/netip"

	"github.com/ferryrelay/ferry/internal/mmsg"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// udpListener serves one UDP listen address through one or more SO_REUSEPORT sockets, each
// read in batches by its own goroutine, which relays data and answers control messages
// itself: no hand-off between goroutines on the way from a client to a peer.
type udpListener struct {
	l     *Listeners
	socks []*alloc.Socket
	local netip.AddrPort
}

// clientBuf is the room for one client datagram; a longer one is dropped as too_large (TURN
// messages and media from browsers are far smaller).
const clientBuf = 4096

func newUDPListener(l *Listeners, conns []*net.UDPConn) (*udpListener, error) {
	if len(conns) == 0 {
		return nil, errors.New("relay: UDP listener without sockets")
	}
	u := &udpListener{l: l, local: addrPort(conns[0].LocalAddr())}
	for _, c := range conns {
		s, err := alloc.NewSocket(c)
		if err != nil {
			return nil, err
		}
		u.socks = append(u.socks, s)
	}
	return u, nil
}

// read reads client datagrams in batches (recvmmsg) and relays their data grouped by
// allocation (sendmmsg), until the socket closes.
func (u *udpListener) read(sock *alloc.Socket) {
	r, in, ob := mmsg.NewReader(), mmsg.NewBatch(alloc.BatchSize, clientBuf), u.l.cfg.Table.NewOutbox()
	for {
		n, err := r.Read(sock.RawConn(), in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (ICMP-induced); the socket is still usable
		}
		for i := 0; i < n; i++ {
			if in.Trunc[i] {
				u.l.cfg.Stats.Drop(stats.DropTooLarge)
				continue
			}
			u.handle(sock, in.Bufs[i][:in.Lens[i]], in.Addrs[i], ob)
		}
		ob.Flush()
	}
}

// handle dispatches one datagram from a client (RFC 7983 demultiplexing): ChannelData and
// Send indications to the data path (into ob; the caller flushes), everything else to the
// control plane.
func (u *udpListener) handle(sock *alloc.Socket, pkt []byte, src netip.AddrPort, ob *alloc.Outbox) {
	cfg := &u.l.cfg
	kind, size, plen := wire.NextFrame(pkt, false)
	key := alloc.Key{Transport: wire.UDP, Client: src, Server: u.local}
	switch {
	case kind == wire.FrameChannelData:
		a := cfg.Table.Lookup(key)
		if a == nil {
			cfg.Stats.Drop(stats.DropNoAllocation)
			return
		}
		ob.ChannelData(a, wire.Be16(pkt), pkt[wire.ChannelHeaderLen:wire.ChannelHeaderLen+plen])
	case kind != wire.FrameSTUN || size != len(pkt):
		cfg.Stats.Drop(stats.DropMalformed) // short ChannelData (C09), garbage, or not one whole message
	case wire.Be16(pkt) == wire.TypeSendIndication:
		a := cfg.Table.Lookup(key)
		if a == nil {
			cfg.Stats.Drop(stats.DropNoAllocation)
			return
		}
		ob.SendIndication(a, pkt)
	default:
		ob.Flush() // keep a client's data and control in order
		cfg.Control.Handle(pkt, &control.Source{Key: key, Client: alloc.Client{UDP: sock, Addr: src},
			Reply: func(b []byte) { _, _ = sock.WriteToUDPAddrPort(b, src) }})
	}
}
