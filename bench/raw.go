package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/ferryrelay/ferry/internal/mmsg"
)

// runRawForwarder is the raw UDP forwarder: the same socket topology as a TURN relay (one
// listening socket for clients, one socket per "allocation" towards the peer) and the same
// 4-byte ChannelData framing, but no TURN state, no policy, no metrics: the limit of what a
// relay can do on this machine. It batches with recvmmsg/sendmmsg, and with gso sends each
// batch's datagrams to one address as one UDP GSO send. Channel 0x4000+i is pair i; pairs
// are created on first use.
func runRawForwarder(peer string, gso bool) error {
	peerAddr, err := netip.ParseAddrPort(peer)
	if err != nil {
		return err
	}
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	_ = ln.SetReadBuffer(4 << 20)
	_ = ln.SetWriteBuffer(4 << 20)
	fmt.Printf("raw forwarder listening udp_port=%d\n", ln.LocalAddr().(*net.UDPAddr).Port)
	f := &forwarder{ln: ln, peer: peerAddr, gso: gso}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		ln.Close()
		f.closePairs()
	}()
	return f.serveClients()
}

type forwarder struct {
	ln    *net.UDPConn
	peer  netip.AddrPort
	gso   bool
	mu    sync.Mutex
	pairs []*pair
	wg    sync.WaitGroup
}

type pair struct {
	sock   *net.UDPConn
	rc     syscall.RawConn
	client netip.AddrPort
	num    uint16
	out    *mmsg.Batch // client -> peer datagrams of the current read batch
	k      int
}

const rawBatch = 32

func (f *forwarder) pair(i int, client netip.AddrPort) (*pair, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.pairs) <= i {
		f.pairs = append(f.pairs, nil)
	}
	if p := f.pairs[i]; p != nil {
		return p, nil
	}
	s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	rc, err := s.SyscallConn()
	if err != nil {
		s.Close()
		return nil, err
	}
	p := &pair{sock: s, rc: rc, client: client, num: 0x4000 + uint16(i), out: mmsg.NewBatch(rawBatch, 0)}
	f.pairs[i] = p
	f.wg.Go(func() { f.servePeer(p) })
	return p, nil
}

func (f *forwarder) closePairs() {
	f.mu.Lock()
	for _, p := range f.pairs {
		if p != nil {
			p.sock.Close()
		}
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// serveClients: client -> peer. ChannelData in, payloads out through each pair's socket,
// one sendmmsg (or GSO send) per pair and read batch.
func (f *forwarder) serveClients() error {
	rc, err := f.ln.SyscallConn()
	if err != nil {
		return err
	}
	r, w := mmsg.NewReader(), mmsg.NewWriter()
	b := mmsg.NewBatch(rawBatch, 2048)
	gsoBuf := make([]byte, rawBatch*2048)
	var touched []*pair
	for {
		n, err := r.Read(rc, b)
		if err != nil {
			return nil
		}
		for i := 0; i < n; i++ {
			d := b.Bufs[i][:b.Lens[i]]
			if len(d) < 4 {
				continue
			}
			num := binary.BigEndian.Uint16(d)
			l := int(binary.BigEndian.Uint16(d[2:]))
			if num < 0x4000 || 4+l > len(d) {
				continue
			}
			p, err := f.pair(int(num-0x4000), b.Addrs[i])
			if err != nil {
				continue
			}
			if p.k == 0 {
				touched = append(touched, p)
			}
			p.out.Bufs[p.k], p.out.Lens[p.k], p.out.Addrs[p.k] = d[4:4+l], l, f.peer
			p.k++
		}
		for _, p := range touched {
			f.send(w, p.rc, p.out, p.k, gsoBuf)
			p.k = 0
		}
		touched = touched[:0]
	}
}

// send writes the first k datagrams of b, all to b.Addrs[0]: one GSO send when enabled and
// they are equal-sized (the last may be shorter), else one sendmmsg.
func (f *forwarder) send(w *mmsg.Writer, rc syscall.RawConn, b *mmsg.Batch, k int, gsoBuf []byte) {
	if f.gso && k >= 2 {
		seg, off, ok := b.Lens[0], 0, true
		for i := 0; i < k && ok; i++ {
			ok = b.Lens[i] == seg || (i == k-1 && b.Lens[i] < seg)
		}
		if ok {
			for i := range k {
				off += copy(gsoBuf[off:], b.Bufs[i][:b.Lens[i]])
			}
			if used, _ := w.WriteGSO(rc, false, gsoBuf[:off], seg, b.Addrs[0]); used {
				return
			}
		}
	}
	_, _ = w.Write(rc, false, b, k)
}

// servePeer: peer -> client. Datagrams in, ChannelData out through the listening socket.
func (f *forwarder) servePeer(p *pair) {
	in, err := p.sock.SyscallConn()
	if err != nil {
		return
	}
	out, err := f.ln.SyscallConn()
	if err != nil {
		return
	}
	r, w := mmsg.NewReader(), mmsg.NewWriter()
	gsoBuf := make([]byte, rawBatch*2052)
	// Datagrams are read 4 bytes into the write buffers, so framing needs no copy.
	wb := mmsg.NewBatch(rawBatch, 2052)
	rb := mmsg.NewBatch(rawBatch, 1)
	for i := range rb.Bufs {
		rb.Bufs[i] = wb.Bufs[i][4:]
	}
	for {
		n, err := r.Read(in, rb)
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			l := rb.Lens[i]
			binary.BigEndian.PutUint16(wb.Bufs[i], p.num)
			binary.BigEndian.PutUint16(wb.Bufs[i][2:], uint16(l))
			wb.Lens[i], wb.Addrs[i] = 4+l, p.client
		}
		f.send(w, out, wb, n, gsoBuf)
	}
}
