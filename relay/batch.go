package relay

import (
	"net/netip"
	"sync"
	"syscall"

	"github.com/ferryrelay/ferry/internal/mmsg"
)

// batchSize is how many datagrams one recvmmsg/sendmmsg moves.
const batchSize = 32

// peerBuf is the payload room of a datagram read from a peer: larger datagrams are dropped
// (counted as too_large), never relayed truncated.
const peerBuf = 2048

// sendBatch writes the first k datagrams of b on rc: as one UDP GSO send when they go to one
// destination with equal sizes (the last may be shorter), else with sendmmsg. It returns how
// many were sent. gso is scratch room for the GSO copy.
func sendBatch(w *mmsg.Writer, rc syscall.RawConn, v6 bool, b *mmsg.Batch, k int, gso []byte) (int, error) {
	if k >= 2 && k <= mmsg.MaxGSOSegments && mmsg.GSOAvailable() {
		seg, total, ok := b.Lens[0], 0, true
		for i := 0; i < k && ok; i++ {
			ok = b.Addrs[i] == b.Addrs[0] && (b.Lens[i] == seg || (i == k-1 && b.Lens[i] <= seg))
			total += b.Lens[i]
		}
		if ok && total <= len(gso) && total <= maxDatagram-8 {
			off := 0
			for i := 0; i < k; i++ {
				off += copy(gso[off:], b.Bufs[i][:b.Lens[i]])
			}
			if used, err := w.WriteGSO(rc, v6, gso[:off], seg, b.Addrs[0]); used {
				if err != nil {
					return 0, err
				}
				return k, nil
			}
		}
	}
	return w.Write(rc, v6, b, k)
}

// outbox collects the datagrams a reader relays to peers while it works through one batch,
// then sends them grouped by relay socket: one sendmmsg (or GSO send) per allocation instead
// of one sendto per datagram. Payloads point into the reader's buffers: flush before reuse.
type outbox struct {
	items []outItem
	b     *mmsg.Batch
	w     *mmsg.Writer
	gso   []byte
}

type outItem struct {
	a       *alloc
	dst     netip.AddrPort
	payload []byte
}

// newOutbox makes an outbox; without gso its batches always go out with sendmmsg.
func newOutbox(gso bool) *outbox {
	o := &outbox{items: make([]outItem, 0, batchSize), b: mmsg.NewBatch(batchSize, 0), w: mmsg.NewWriter()}
	if gso {
		o.gso = make([]byte, 64<<10) // no room, no GSO: sendBatch falls back to sendmmsg
	}
	return o
}

func (o *outbox) add(s *Server, a *alloc, dst netip.AddrPort, payload []byte) {
	if len(o.items) == cap(o.items) {
		o.flush(s)
	}
	o.items = append(o.items, outItem{a, dst, payload})
}

// flush sends everything collected, one batch per relay socket, and counts it.
func (o *outbox) flush(s *Server) {
	for i := range o.items {
		a := o.items[i].a
		if a == nil {
			continue
		}
		k, bytes := 0, 0
		for j := i; j < len(o.items); j++ {
			if o.items[j].a != a {
				continue
			}
			o.b.Bufs[k], o.b.Lens[k], o.b.Addrs[k] = o.items[j].payload, len(o.items[j].payload), o.items[j].dst
			bytes += len(o.items[j].payload)
			o.items[j].a = nil
			k++
		}
		sent, _ := sendBatch(o.w, a.relay.rc, a.relay.v6, o.b, k, o.gso)
		if sent < k {
			s.m.droppedByName[dropWriteError].Add(float64(k - sent))
		}
		if sent > 0 {
			a.countN(toPeer, sent, bytes) // exact per packet count; bytes of a partly failed batch are approximate
		}
	}
	o.items = o.items[:0]
}

// outbox returns a pooled outbox (for stream connections, which relay only now and then).
func (s *Server) outbox() *outbox {
	if o, ok := s.outs.Get().(*outbox); ok {
		return o
	}
	return newOutbox(!s.cfg.NoGSO)
}

// peerReader is the pooled state for reading a relay socket and writing to its client:
// buffers with headroom for the TURN header, so framing needs no copy.
type peerReader struct {
	r    *mmsg.Reader
	in   *mmsg.Batch // Bufs point at bufs[i][headroom:headroom+peerBuf]
	bufs [][]byte
	out  *mmsg.Batch // frames to the client (UDP)
	w    *mmsg.Writer
	gso  []byte
	seq  []byte // frames to the client, concatenated (TCP/TLS)
}

const peerBatch = 16

func newPeerReader(gso bool) *peerReader {
	p := &peerReader{r: mmsg.NewReader(), in: mmsg.NewBatch(peerBatch, 0), out: mmsg.NewBatch(peerBatch, 0),
		w: mmsg.NewWriter(), seq: make([]byte, 0, peerBatch*(peerBuf+headroom+4))}
	if gso {
		p.gso = make([]byte, peerBatch*(peerBuf+headroom+4))
	}
	p.bufs = make([][]byte, peerBatch)
	for i := range p.bufs {
		p.bufs[i] = make([]byte, headroom+peerBuf+4)
		p.in.Bufs[i] = p.bufs[i][headroom : headroom+peerBuf]
	}
	return p
}

// peerReaders lends buffers to relay sockets only while they have data: an idle allocation
// holds none.
type peerReaders struct {
	pool  sync.Pool
	noGSO bool // set before use: Config.NoGSO
}

func (p *peerReaders) get() *peerReader {
	if r, ok := p.pool.Get().(*peerReader); ok {
		return r
	}
	return newPeerReader(!p.noGSO)
}

func (p *peerReaders) put(r *peerReader) { p.pool.Put(r) }
