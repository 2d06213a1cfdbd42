package relay

import (
	"errors"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"time"
)

// udpListener serves one UDP listen address, possibly through several SO_REUSEPORT sockets.
// Its readers relay ChannelData and Send indications and answer Binding requests themselves;
// every other message goes through a bounded queue to pion's read loop (udpControl).
type udpListener struct {
	s      *Server
	socks  []*net.UDPConn
	local  netip.AddrPort
	allocs shardedAllocs
	ctrl   chan ctrlPacket
	done   chan struct{}
	once   sync.Once
}

type ctrlPacket struct {
	data []byte
	src  netip.AddrPort
}

// controlQueueLen bounds the messages waiting for pion's read loop per UDP listener.
const controlQueueLen = 1024

func newUDPListener(s *Server, socks []*net.UDPConn) (*udpListener, error) {
	if len(socks) == 0 {
		return nil, errors.New("relay: UDP listener without sockets")
	}
	ap, ok := addrPortOf(socks[0].LocalAddr())
	if !ok {
		return nil, errors.New("relay: UDP socket without UDP address")
	}
	return &udpListener{s: s, socks: socks, local: ap,
		ctrl: make(chan ctrlPacket, controlQueueLen), done: make(chan struct{})}, nil
}

func (l *udpListener) start(wg *sync.WaitGroup) {
	for _, sock := range l.socks {
		wg.Go(func() { l.read(sock) })
	}
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

func (l *udpListener) read(sock *net.UDPConn) {
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. a transient ICMP-induced error; the socket is still usable
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		l.handle(sock, buf[:n], src)
	}
}

// handle dispatches one datagram from a client (RFC 7983 demultiplexing).
func (l *udpListener) handle(sock *net.UDPConn, pkt []byte, src netip.AddrPort) {
	s := l.s
	kind, size, plen := nextFrame(pkt, false)
	switch kind {
	case frameChannelData:
		a := l.allocs.get(src)
		if a == nil {
			s.m.drop(dropNoAllocation)
			return
		}
		s.relayChannelData(a, be16(pkt), pkt[channelHdrLen:channelHdrLen+plen])
	case frameSTUN:
		if size != len(pkt) {
			s.m.drop(dropMalformed) // a datagram carries exactly one STUN message
			return
		}
		switch be16(pkt) {
		case typeSendIndication:
			a := l.allocs.get(src)
			if a == nil {
				s.m.drop(dropNoAllocation)
				return
			}
			s.relaySendIndication(a, pkt)
		case typeBindingRequest:
			s.answerBinding(pkt, UDP, src, func(b []byte) error {
				_, err := sock.WriteToUDPAddrPort(b, src)
				return err
			})
		default:
			select {
			case l.ctrl <- ctrlPacket{data: append([]byte(nil), pkt...), src: src}:
			default:
				s.m.drop(dropQueueFull)
			}
		}
	default:
		s.m.drop(dropMalformed) // short ChannelData (C09), garbage, or truncated STUN
	}
}

func (l *udpListener) close() error {
	var errs []error
	l.once.Do(func() {
		close(l.done)
		for _, sock := range l.socks {
			errs = append(errs, sock.Close())
		}
	})
	return errors.Join(errs...)
}

// udpControl is the net.PacketConn pion reads: control messages of one UDP listener, after
// Ferry's inspection, and its responses written back through the listener's socket.
type udpControl struct{ l *udpListener }

func (c udpControl) ReadFrom(p []byte) (int, net.Addr, error) {
	l := c.l
	for {
		var pkt ctrlPacket
		select {
		case pkt = <-l.ctrl:
		case <-l.done:
			return 0, nil, net.ErrClosed
		}
		reply := func(b []byte) error {
			_, err := l.socks[0].WriteToUDPAddrPort(b, pkt.src)
			return err
		}
		if !l.s.inspect(pkt.data, UDP, l.local, pkt.src, reply) {
			continue
		}
		if len(pkt.data) > len(p) {
			l.s.m.drop(dropTooLarge)
			continue
		}
		return copy(p, pkt.data), net.UDPAddrFromAddrPort(pkt.src), nil
	}
}

func (c udpControl) WriteTo(b []byte, addr net.Addr) (int, error) {
	ap, ok := addrPortOf(addr)
	if !ok {
		return 0, errors.New("relay: write to a non-UDP address")
	}
	c.l.s.observeResponse(b)
	return c.l.socks[0].WriteToUDPAddrPort(b, ap)
}

func (c udpControl) Close() error                     { return c.l.close() }
func (c udpControl) LocalAddr() net.Addr              { return net.UDPAddrFromAddrPort(c.l.local) }
func (c udpControl) SetDeadline(time.Time) error      { return nil }
func (c udpControl) SetReadDeadline(time.Time) error  { return nil }
func (c udpControl) SetWriteDeadline(time.Time) error { return nil }

// shardedAllocs maps a client transport address to its allocation on one UDP listener. The
// data path looks up every ChannelData packet here; shards keep readers off each other's locks.
type shardedAllocs struct {
	seed   maphash.Seed
	shards [64]struct {
		sync.RWMutex
		m map[netip.AddrPort]*alloc
	}
}

func (s *shardedAllocs) shard(ap netip.AddrPort) int {
	if s.seed == (maphash.Seed{}) {
		return 0
	}
	return int(maphash.Comparable(s.seed, ap) % uint64(len(s.shards)))
}

func (s *shardedAllocs) init() {
	s.seed = maphash.MakeSeed()
	for i := range s.shards {
		s.shards[i].m = map[netip.AddrPort]*alloc{}
	}
}

func (s *shardedAllocs) get(ap netip.AddrPort) *alloc {
	sh := &s.shards[s.shard(ap)]
	sh.RLock()
	a := sh.m[ap]
	sh.RUnlock()
	return a
}

func (s *shardedAllocs) put(ap netip.AddrPort, a *alloc) {
	sh := &s.shards[s.shard(ap)]
	sh.Lock()
	sh.m[ap] = a
	sh.Unlock()
}

func (s *shardedAllocs) del(ap netip.AddrPort, a *alloc) {
	sh := &s.shards[s.shard(ap)]
	sh.Lock()
	if sh.m[ap] == a {
		delete(sh.m, ap)
	}
	sh.Unlock()
}
