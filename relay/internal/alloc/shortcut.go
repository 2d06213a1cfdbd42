package alloc

import (
	"github.com/ferryrelay/ferry/internal/mmsg"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// shortcut relays data between two allocations of this server without the kernel in
// between. When both participants of a call are relayed (relay-only ICE, C06), each sends to
// the other's relayed transport address; instead of sending the datagram out of one relay
// socket and reading it back from the other, the data is framed at once for the other
// allocation's client, exactly as if it had arrived at its relay socket from this one's:
// the same permission and channel checks, the same framing, counted on both allocations.
// That halves the system calls of a relayed call. Only for a UDP client on the receiving
// side; a TCP/TLS client is written by its own goroutine, so its data keeps the kernel path.
type shortcut struct {
	items []shortItem
	bufs  [][]byte // framing room: Headroom, the payload, padding
	b     *mmsg.Batch
	lens  []int
	w     *mmsg.Writer
	gso   []byte
}

type shortItem struct {
	from, to *Allocation
	payload  []byte
}

func newShortcut(gso []byte) *shortcut {
	s := &shortcut{items: make([]shortItem, 0, BatchSize), bufs: make([][]byte, BatchSize),
		b: mmsg.NewBatch(BatchSize, 0), lens: make([]int, 0, BatchSize), w: mmsg.NewWriter(), gso: gso}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, wire.Headroom+peerBuf+4)
	}
	return s
}

// takes reports whether data for to can go the short way.
func takes(to *Allocation) bool { return to.client.UDP != nil && to.client.Stream == nil }

// flush frames and sends the queued data, grouped by sending and receiving allocation, each
// group accounted once on each side.
func (s *shortcut) flush(t *Table) {
	for i := range s.items {
		from, to := s.items[i].from, s.items[i].to
		if from == nil {
			continue
		}
		s.lens = s.lens[:0]
		k := 0
		for j := i; j < len(s.items); j++ {
			if it := &s.items[j]; it.from == from && it.to == to {
				s.lens = append(s.lens, len(it.payload))
				s.frame(t, k, it)
				it.from = nil
				k++
			}
		}
		if k = from.account(stats.ToPeer, s.lens[:k]); k == 0 {
			continue
		}
		if k = to.account(stats.ToClient, s.lens[:k]); k == 0 {
			continue
		}
		if sent := sendBatch(s.w, to.client.UDP, s.b, k, s.gso); sent < k {
			t.stats.DropN(stats.DropWriteError, k-sent)
		}
	}
	s.items = s.items[:0]
}

// frame writes item's payload as the k-th datagram to the receiving client: ChannelData when
// it has a channel to the sender's relayed address, else a Data indication from it.
func (s *shortcut) frame(t *Table, k int, it *shortItem) {
	buf, n := s.bufs[k], len(it.payload)
	copy(buf[wire.Headroom:], it.payload)
	src := it.from.Relayed
	var frame []byte
	if num := it.to.channelOf(src); num != 0 {
		frame = wire.EncodeChannelData(buf, wire.Headroom-wire.ChannelHeaderLen, num, n, false)
	} else {
		frame = wire.EncodeDataIndication(buf, wire.Headroom-wire.DataIndicationHeaderLen(src), n, src)
	}
	s.b.Bufs[k], s.b.Lens[k], s.b.Addrs[k] = frame, len(frame), it.to.client.Addr
}
