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
// relay can do on this machine. It batches with recvmmsg/sendmmsg. Channel 0x4000+i is pair
// i; pairs are created on first use.
func runRawForwarder(peer string) error {
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
	f := &forwarder{ln: ln, peer: peerAddr}
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
	mu    sync.Mutex
	pairs []*pair
	wg    sync.WaitGroup
}

type pair struct {
	sock   *net.UDPConn
	client netip.AddrPort
	num    uint16
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
	p := &pair{sock: s, client: client, num: 0x4000 + uint16(i)}
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

// serveClients: client -> peer. ChannelData in, payload out through the pair's socket.
func (f *forwarder) serveClients() error {
	rc, err := f.ln.SyscallConn()
	if err != nil {
		return err
	}
	r := mmsg.NewReader()
	b := mmsg.NewBatch(rawBatch, 2048)
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
			_, _ = p.sock.WriteToUDPAddrPort(d[4:4+l], f.peer)
		}
	}
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
		_, _ = w.Write(out, false, wb, n)
	}
}
