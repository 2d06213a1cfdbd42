package relay

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/ferryrelay/ferry/internal/mmsg"
)

// udpListener serves one UDP listen address, possibly through several SO_REUSEPORT sockets.
// Its readers relay ChannelData and Send indications and answer Binding requests themselves;
// every other message goes through a bounded queue to one of pion's read loops (udpControl).
// pion handles one listener's control messages on one goroutine, so Ferry gives it one
// control connection per CPU for the same address and routes each client IP to a fixed one.
type udpListener struct {
	s      *Server
	socks  []*udpSocket
	local  netip.AddrPort
	laddr  *net.UDPAddr // local as pion's net.Addr, made once (pion keeps one per allocation)
	allocs shardedAllocs
	ctrls  []chan ctrlPacket // one per control shard
	seed   maphash.Seed
	done   chan struct{}
	once   sync.Once
}

type ctrlPacket struct {
	data []byte
	src  netip.AddrPort
}

// controlQueueLen bounds the messages waiting for pion's read loop per UDP listener.
const controlQueueLen = 1024

// udpSocket is a UDP socket with its raw handle for batched I/O.
type udpSocket struct {
	*net.UDPConn
	rc syscall.RawConn
	v6 bool // AF_INET6: IPv4 destinations are written as IPv4-mapped
}

func newUDPSocket(c *net.UDPConn) (*udpSocket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return &udpSocket{UDPConn: c, rc: rc, v6: mmsg.IsV6(c)}, nil
}

func newUDPListener(s *Server, conns []*net.UDPConn) (*udpListener, error) {
	if len(conns) == 0 {
		return nil, errors.New("relay: UDP listener without sockets")
	}
	ap, ok := addrPortOf(conns[0].LocalAddr())
	if !ok {
		return nil, errors.New("relay: UDP socket without UDP address")
	}
	l := &udpListener{s: s, local: ap, laddr: net.UDPAddrFromAddrPort(ap), done: make(chan struct{}), seed: maphash.MakeSeed()}
	for range controlShards() {
		l.ctrls = append(l.ctrls, make(chan ctrlPacket, controlQueueLen))
	}
	for _, c := range conns {
		us, err := newUDPSocket(c)
		if err != nil {
			return nil, err
		}
		l.socks = append(l.socks, us)
	}
	return l, nil
}

func (l *udpListener) start(wg *sync.WaitGroup) {
	for _, sock := range l.socks {
		wg.Go(func() { l.read(sock) })
	}
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// clientBuf is the room for one client datagram; a longer one is dropped as too_large (TURN
// messages and media from browsers are far smaller).
const clientBuf = 4096

// read reads client datagrams in batches (recvmmsg) and relays their data grouped by
// allocation (sendmmsg).
func (l *udpListener) read(sock *udpSocket) {
	r, in, ob := mmsg.NewReader(), mmsg.NewBatch(batchSize, clientBuf), newOutbox(!l.s.cfg.NoGSO)
	for {
		n, err := r.Read(sock.rc, in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. a transient ICMP-induced error; the socket is still usable
		}
		for i := 0; i < n; i++ {
			if in.Trunc[i] {
				l.s.m.drop(dropTooLarge)
				continue
			}
			l.handle(sock, in.Bufs[i][:in.Lens[i]], in.Addrs[i], ob)
		}
		ob.flush(l.s)
	}
}

// handle dispatches one datagram from a client (RFC 7983 demultiplexing). Data for peers
// goes into ob; the caller flushes it.
func (l *udpListener) handle(sock *udpSocket, pkt []byte, src netip.AddrPort, ob *outbox) {
	s := l.s
	kind, size, plen := nextFrame(pkt, false)
	switch kind {
	case frameChannelData:
		a := l.allocs.get(src)
		if a == nil {
			s.m.drop(dropNoAllocation)
			return
		}
		s.relayChannelData(a, be16(pkt), pkt[channelHdrLen:channelHdrLen+plen], ob)
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
			s.relaySendIndication(a, pkt, ob)
		case typeBindingRequest:
			s.answerBinding(pkt, UDP, src, func(b []byte) error {
				_, err := sock.WriteToUDPAddrPort(b, src)
				return err
			})
		default:
			select {
			case l.ctrls[l.shard(src)] <- ctrlPacket{data: append([]byte(nil), pkt...), src: src}:
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

// controlShards is the number of pion control loops per UDP listener.
func controlShards() int { return min(runtime.GOMAXPROCS(0), 8) }

// shard picks the control loop of a client. By IP, not port: a client's related
// allocations (EVEN-PORT reservations) then meet in one pion allocation manager.
func (l *udpListener) shard(src netip.AddrPort) int {
	if len(l.ctrls) == 1 {
		return 0
	}
	return int(maphash.Comparable(l.seed, src.Addr()) % uint64(len(l.ctrls)))
}

// udpControl is a net.PacketConn pion reads: the control messages of one shard of a UDP
// listener, after Ferry's inspection, and its responses written back through the listener.
type udpControl struct {
	l     *udpListener
	shard int
}

func (c udpControl) ReadFrom(p []byte) (int, net.Addr, error) {
	l := c.l
	for {
		var pkt ctrlPacket
		select {
		case pkt = <-l.ctrls[c.shard]:
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
func (c udpControl) LocalAddr() net.Addr              { return c.l.laddr }
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
