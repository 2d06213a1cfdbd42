package alloc

import (
	"net/netip"

	"github.com/ferryrelay/ferry/internal/mmsg"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// The data path: application data between clients and peers (RFC 8656 §11-§12). Nothing here
// allocates, logs or formats per packet; counting is atomic adds through Allocation.account.

// BatchSize is how many datagrams one recvmmsg or sendmmsg moves.
const BatchSize = 32

// peerBuf is the payload room of a datagram read from a peer: larger datagrams are dropped
// (counted as too_large), never relayed truncated.
const peerBuf = 2048

// Outbox collects the datagrams a reader relays to peers while it works through one batch of
// client data, then sends them grouped by relay socket: one sendmmsg (or GSO send) per
// allocation instead of one sendto per datagram. Payloads point into the reader's buffers:
// Flush before reusing them. An Outbox belongs to one goroutine.
type Outbox struct {
	t     *Table
	items []outItem
	b     *mmsg.Batch
	w     *mmsg.Writer
	gso   []byte
	short *shortcut // data for other allocations of this server
}

type outItem struct {
	a       *Allocation
	dst     netip.AddrPort
	payload []byte
}

// NewOutbox returns an Outbox for one reader goroutine.
func (t *Table) NewOutbox() *Outbox {
	o := &Outbox{t: t, items: make([]outItem, 0, BatchSize), b: mmsg.NewBatch(BatchSize, 0), w: mmsg.NewWriter()}
	if !t.cfg.NoGSO {
		o.gso = make([]byte, 64<<10) // no room, no GSO: sendBatch falls back to sendmmsg
	}
	o.short = newShortcut(o.gso)
	return o
}

// ChannelData queues the payload of a ChannelData message from a's client for the peer
// bound to num (RFC 8656 §12.6). Unbound channels and peers without a permission are dropped.
func (o *Outbox) ChannelData(a *Allocation, num uint16, payload []byte) {
	peer, ok := a.channelPeer(num)
	if !ok {
		o.t.stats.Drop(stats.DropNoChannel)
		return
	}
	o.route(a, peer, payload)
}

// route queues payload from a's client for peer: the short way when peer is the relayed
// transport address of an allocation whose client is on UDP, else out of a's relay socket.
func (o *Outbox) route(a *Allocation, peer netip.AddrPort, payload []byte) {
	dst, other, ok := o.t.peerDest(a, peer)
	switch {
	case !ok:
	case other == nil || !takes(other):
		o.add(a, dst, payload)
	case len(payload) > peerBuf:
		o.t.stats.Drop(stats.DropTooLarge) // as its relay socket would have
	case other.permission(a.Relayed.Addr()) == 0:
		o.t.stats.Drop(stats.DropNoPermission)
	default:
		if len(o.short.items) == cap(o.short.items) {
			o.Flush()
		}
		o.short.items = append(o.short.items, shortItem{a, other, payload})
	}
}

// SendIndication queues the DATA of a Send indication from a's client (RFC 8656 §11.2). A
// Send indication never creates or refreshes a permission; without one it is dropped.
func (o *Outbox) SendIndication(a *Allocation, msg []byte) {
	if !wire.FingerprintOK(msg) {
		o.t.stats.Drop(stats.DropBadFingerprint)
		return
	}
	pv, data := wire.Attr(msg, wire.AttrXORPeerAddress), wire.Attr(msg, wire.AttrData)
	if pv == nil || data == nil {
		o.t.stats.Drop(stats.DropMalformed)
		return
	}
	peer, ok := wire.DecodeXORAddr(pv, msg)
	if !ok {
		o.t.stats.Drop(stats.DropMalformed)
		return
	}
	o.route(a, peer, data)
}

func (o *Outbox) add(a *Allocation, dst netip.AddrPort, payload []byte) {
	if len(o.items) == cap(o.items) {
		o.Flush()
	}
	o.items = append(o.items, outItem{a, dst, payload})
}

// Flush sends everything queued, one batch per relay socket, each accounted once.
func (o *Outbox) Flush() {
	for i := range o.items {
		a := o.items[i].a
		if a == nil {
			continue
		}
		k := 0
		for j := i; j < len(o.items); j++ {
			if o.items[j].a != a {
				continue
			}
			o.b.Bufs[k], o.b.Lens[k], o.b.Addrs[k] = o.items[j].payload, len(o.items[j].payload), o.items[j].dst
			o.items[j].a = nil
			k++
		}
		if k = a.account(stats.ToPeer, o.b.Lens[:k]); k == 0 {
			continue
		}
		if sent := sendBatch(o.w, a.relay.Socket, o.b, k, o.gso); sent < k {
			o.t.stats.DropN(stats.DropWriteError, k-sent)
		}
	}
	o.items = o.items[:0]
	o.short.flush(o.t)
}

// peerDest checks that a may send to peer (a permission, and the port rules of its class)
// and returns where the datagram really goes: another relayed transport address of this
// server is reached at its bound socket rather than through a NAT hairpin (C06), and that
// allocation is returned too.
func (t *Table) peerDest(a *Allocation, peer netip.AddrPort) (netip.AddrPort, *Allocation, bool) {
	if a.relay == nil {
		t.stats.Drop(stats.DropUnexpected) // data on a TCP allocation's control connection
		return netip.AddrPort{}, nil, false
	}
	switch a.permission(peer.Addr()) {
	case 0:
		t.stats.Drop(stats.DropNoPermission)
		return netip.AddrPort{}, nil, false
	case policy.RelayOnly:
		other := t.byRelayed(peer)
		if other == nil || other.relay == nil || other.Ended() {
			t.stats.Drop(stats.DropPeerPort)
			return netip.AddrPort{}, nil, false
		}
		return other.relay.bind, other, true
	case policy.Local:
		if t.servicePorts.has(peer.Port()) {
			t.stats.Drop(stats.DropPeerPort)
			return netip.AddrPort{}, nil, false
		}
	}
	return peer, nil, true
}

// peerReader is the pooled state for reading a relay socket and writing to its client:
// buffers with headroom for the TURN header, so framing needs no copy.
type peerReader struct {
	t    *Table
	r    *mmsg.Reader
	in   *mmsg.Batch // Bufs point at bufs[i][Headroom:Headroom+peerBuf]
	bufs [][]byte
	out  *mmsg.Batch // frames to a UDP client
	lens []int       // payload lengths of the frames, for account
	ends []int       // where each frame ends in seq
	w    *mmsg.Writer
	gso  []byte
	seq  []byte // frames to a TCP/TLS client, concatenated
}

const peerBatch = 16

func newPeerReader(t *Table) *peerReader {
	p := &peerReader{t: t, r: mmsg.NewReader(), in: mmsg.NewBatch(peerBatch, 0), out: mmsg.NewBatch(peerBatch, 0),
		lens: make([]int, 0, peerBatch), ends: make([]int, 0, peerBatch), w: mmsg.NewWriter(), seq: make([]byte, 0, peerBatch*(peerBuf+wire.Headroom+4))}
	if !t.cfg.NoGSO {
		p.gso = make([]byte, peerBatch*(peerBuf+wire.Headroom+4))
	}
	p.bufs = make([][]byte, peerBatch)
	for i := range p.bufs {
		p.bufs[i] = make([]byte, wire.Headroom+peerBuf+4)
		p.in.Bufs[i] = p.bufs[i][wire.Headroom : wire.Headroom+peerBuf]
	}
	return p
}

// deliver frames the n datagrams just read from a's relayed transport address and sends them
// to the client: ChannelData when a channel is bound to the peer, else a Data indication
// (RFC 8656 §11.3, §12.7), and only with a permission. A UDP client gets them in one
// sendmmsg (or GSO send), a TCP/TLS client in one write.
func (pr *peerReader) deliver(a *Allocation, n int) {
	t := pr.t
	stream := a.client.Stream != nil
	k := 0
	pr.seq, pr.lens, pr.ends = pr.seq[:0], pr.lens[:0], pr.ends[:0]
	for i := 0; i < n; i++ {
		if pr.in.Trunc[i] {
			t.stats.Drop(stats.DropTooLarge) // never relay a partial datagram
			continue
		}
		src := pr.in.Addrs[i]
		// A datagram from another relayed transport address of this server arrives from its
		// bind address; the permission was installed for the advertised one.
		if other := t.byBind(src); other != nil {
			src = other.relay.public
		}
		if a.permission(src.Addr()) == 0 {
			t.stats.Drop(stats.DropNoPermission)
			continue
		}
		size := pr.in.Lens[i]
		var frame []byte
		if num := a.channelOf(src); num != 0 {
			frame = wire.EncodeChannelData(pr.bufs[i], wire.Headroom-wire.ChannelHeaderLen, num, size, stream)
		} else {
			frame = wire.EncodeDataIndication(pr.bufs[i], wire.Headroom-wire.DataIndicationHeaderLen(src), size, src)
		}
		if stream {
			pr.seq = append(pr.seq, frame...)
			pr.ends = append(pr.ends, len(pr.seq))
		} else {
			pr.out.Bufs[k], pr.out.Lens[k], pr.out.Addrs[k] = frame, len(frame), a.client.Addr
		}
		pr.lens = append(pr.lens, size)
		k++
	}
	if k == 0 {
		return
	}
	if k = a.account(stats.ToClient, pr.lens); k == 0 {
		return
	}
	if stream {
		if _, err := a.client.Stream.Write(pr.seq[:pr.ends[k-1]]); err != nil {
			t.stats.DropN(stats.DropWriteError, k)
		}
		return
	}
	if sent := sendBatch(pr.w, a.client.UDP, pr.out, k, pr.gso); sent < k {
		t.stats.DropN(stats.DropWriteError, k-sent)
	}
}
