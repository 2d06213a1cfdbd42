package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/turn/v5"
	"golang.org/x/sys/unix"
)

var errFamilyUnsupported = errors.New("relay: no relay address configured for this address family")

// relayConn is the UDP socket of one relayed transport address. pion reads it from its
// per-allocation goroutine; Ferry's ReadFrom never returns a datagram to pion but relays
// what arrives to the client itself, in batches, so pion only learns that the socket closed.
type relayConn struct {
	s      *Server
	sock   *net.UDPConn
	rc     syscall.RawConn
	v6     bool
	bind   netip.AddrPort // the socket's address
	public netip.AddrPort // XOR-RELAYED-ADDRESS (the advertised IP when behind 1:1 NAT)
	alloc  atomic.Pointer[alloc]
	once   sync.Once
	onRead func(uintptr) bool
	rerr   error
}

// ReadFrom waits for datagrams and relays them until the socket closes. It borrows read
// buffers only while data is queued, so an idle allocation holds none.
func (c *relayConn) ReadFrom([]byte) (int, net.Addr, error) {
	for {
		c.rerr = nil
		if err := c.rc.Read(c.onRead); err != nil {
			return 0, nil, err
		}
		if c.rerr != nil && !errors.Is(c.rerr, syscall.ECONNREFUSED) {
			return 0, nil, c.rerr
		}
	}
}

// readable drains the socket (called by the runtime when it is readable); false means "wait
// for more".
func (c *relayConn) readable(fd uintptr) bool {
	s := c.s
	for {
		pr := s.readers.get()
		n, err := pr.r.TryRead(fd, pr.in)
		if err != nil {
			s.readers.put(pr)
			if errors.Is(err, syscall.EAGAIN) {
				return false
			}
			c.rerr = err
			return true
		}
		if a := c.alloc.Load(); a != nil {
			s.deliverFromPeers(a, pr, n)
		} else {
			s.m.droppedByName[dropNoAllocation].Add(float64(n))
		}
		s.readers.put(pr)
		if n < len(pr.in.Bufs) {
			return false // drained
		}
	}
}

// WriteTo is pion's way to send to a peer. Ferry relays client data itself, so this only runs
// if pion handles data; it applies the same checks.
func (c *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a := c.alloc.Load()
	ap, ok := addrPortOf(addr)
	if a == nil || !ok {
		return 0, errors.New("relay: write on a relay socket without allocation")
	}
	c.s.sendToPeer(a, b, ap)
	return len(b), nil
}

func (c *relayConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.sock.Close()
		c.s.relays.remove(c)
		c.s.relayClosed()
	})
	return err
}

func (c *relayConn) LocalAddr() net.Addr                { return net.UDPAddrFromAddrPort(c.bind) }
func (c *relayConn) SetDeadline(t time.Time) error      { return c.sock.SetDeadline(t) }
func (c *relayConn) SetReadDeadline(t time.Time) error  { return c.sock.SetReadDeadline(t) }
func (c *relayConn) SetWriteDeadline(t time.Time) error { return c.sock.SetWriteDeadline(t) }

// relayTable indexes live relay sockets by port for the data path: lock-free lookups of
// "is this an active relayed transport address of ours".
type relayTable struct {
	min, max    uint16
	bind4, pub4 netip.Addr
	bind6, pub6 netip.Addr
	v4, v6      []atomic.Pointer[relayConn]
	tcpMu       sync.Mutex
	tcp         map[netip.AddrPort]*tcpRelayListener
}

func newRelayTable(min, max uint16, bind4, pub4, bind6, pub6 netip.Addr) *relayTable {
	n := int(max) - int(min) + 1
	t := &relayTable{min: min, max: max, bind4: bind4, pub4: pub4, bind6: bind6, pub6: pub6,
		tcp: map[netip.AddrPort]*tcpRelayListener{}}
	if bind4.IsValid() {
		t.v4 = make([]atomic.Pointer[relayConn], n)
	}
	if bind6.IsValid() {
		t.v6 = make([]atomic.Pointer[relayConn], n)
	}
	return t
}

func (t *relayTable) slots(ip netip.Addr) []atomic.Pointer[relayConn] {
	switch ip {
	case t.bind4, t.pub4:
		return t.v4
	case t.bind6, t.pub6:
		return t.v6
	}
	return nil
}

// byPort returns the live relay socket at ip:port where ip is one of the relay IPs.
func (t *relayTable) byPort(ip netip.Addr, port uint16) *relayConn {
	if !ip.IsValid() {
		return nil
	}
	s := t.slots(ip)
	if s == nil || port < t.min || port > t.max {
		return nil
	}
	return s[port-t.min].Load()
}

// byBind returns the live relay socket whose bind address is ap.
func (t *relayTable) byBind(ap netip.AddrPort) *relayConn {
	ip := ap.Addr()
	if ip != t.bind4 && ip != t.bind6 {
		return nil
	}
	rc := t.byPort(ip, ap.Port())
	if rc != nil && rc.bind == ap {
		return rc
	}
	return nil
}

func (t *relayTable) remove(c *relayConn) {
	if s := t.slots(c.bind.Addr()); s != nil {
		s[c.bind.Port()-t.min].CompareAndSwap(c, nil)
	}
}

// relayGen is the turn.RelayAddressGenerator: it opens relay sockets in the configured port
// range on the relay bind IP and reports the advertised address to pion.
type relayGen struct{ s *Server }

func (relayGen) Validate() error { return nil }

const portTries = 64

func (g relayGen) family(network string) (bind, pub netip.Addr, err error) {
	t := g.s.relays
	switch network {
	case "udp4", "tcp4":
		bind, pub = t.bind4, t.pub4
	case "udp6", "tcp6":
		bind, pub = t.bind6, t.pub6
	}
	if !bind.IsValid() {
		return bind, pub, errFamilyUnsupported
	}
	return bind, pub, nil
}

func (g relayGen) ports(requested int) func(yield func(uint16) bool) {
	t := g.s.relays
	return func(yield func(uint16) bool) {
		if requested != 0 {
			if requested >= int(t.min) && requested <= int(t.max) {
				yield(uint16(requested))
			}
			return
		}
		span := int(t.max) - int(t.min) + 1
		for range portTries {
			if !yield(t.min + uint16(rand.N(span))) {
				return
			}
		}
	}
}

func (g relayGen) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	bind, pub, err := g.family(c.Network)
	if err != nil {
		return nil, nil, err
	}
	t := g.s.relays
	for port := range g.ports(c.RequestedPort) {
		slots := t.slots(bind)
		if slots[port-t.min].Load() != nil {
			continue
		}
		sock, err := net.ListenUDP(c.Network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, port)))
		if err != nil {
			continue // in use by someone else: try another port
		}
		if n := g.s.cfg.RelaySocketBuffer; n > 0 {
			_, _ = setSocketBuffers(sock, n, false) // best effort: the kernel default still relays
		}
		raw, err := sock.SyscallConn()
		if err != nil {
			_ = sock.Close()
			return nil, nil, fmt.Errorf("relay: %w", err)
		}
		rc := &relayConn{s: g.s, sock: sock, rc: raw, v6: c.Network == "udp6",
			bind: netip.AddrPortFrom(bind, port), public: netip.AddrPortFrom(pub, port)}
		rc.onRead = rc.readable
		if !slots[port-t.min].CompareAndSwap(nil, rc) {
			_ = sock.Close()
			continue
		}
		g.s.relayOpened()
		return rc, net.UDPAddrFromAddrPort(rc.public), nil
	}
	return nil, nil, fmt.Errorf("relay: no free relay port in %d-%d", t.min, t.max)
}

// reuseControl sets SO_REUSEADDR and SO_REUSEPORT so that a TCP relay listener and the
// outgoing connections of RFC 6062 Connect share one relayed transport address.
func reuseControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func (g relayGen) AllocateListener(c turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	bind, pub, err := g.family(c.Network)
	if err != nil {
		return nil, nil, err
	}
	t := g.s.relays
	lc := net.ListenConfig{Control: reuseControl}
	for port := range g.ports(c.RequestedPort) {
		public := netip.AddrPortFrom(pub, port)
		// SO_REUSEPORT (for Connect's outgoing connections) would let a second listener
		// share a port with a live one, and the kernel would hand its peers to either:
		// reserve the port in the table first.
		tl := &tcpRelayListener{s: g.s, bind: netip.AddrPortFrom(bind, port), public: public}
		t.tcpMu.Lock()
		if _, taken := t.tcp[public]; taken {
			t.tcpMu.Unlock()
			continue
		}
		t.tcp[public] = tl
		t.tcpMu.Unlock()
		ln, err := lc.Listen(context.Background(), c.Network, tl.bind.String())
		if err != nil {
			t.tcpMu.Lock()
			delete(t.tcp, public)
			t.tcpMu.Unlock()
			continue
		}
		tl.Listener = ln
		g.s.relayOpened()
		return tl, net.TCPAddrFromAddrPort(public), nil
	}
	return nil, nil, fmt.Errorf("relay: no free TCP relay port in %d-%d", t.min, t.max)
}

// connectTimeout is the RFC 6062 §5.2 minimum for Connect.
const connectTimeout = 30 * time.Second

func (g relayGen) AllocateConn(c turn.AllocateConnConfig) (net.Conn, error) {
	local, ok1 := addrPortOf(c.LocalAddr)
	remote, ok2 := addrPortOf(c.RemoteAddr)
	if !ok1 || !ok2 {
		return nil, errors.New("relay: connect with unknown address types")
	}
	tl := g.s.relays.tcpByPublic(local)
	if tl == nil {
		return nil, errors.New("relay: connect from an unknown relayed address")
	}
	if reason := g.s.peerPortDenied(remote, true); reason != "" {
		return nil, fmt.Errorf("relay: connect denied by peer policy: %s", reason)
	}
	if peer := g.s.relays.tcpByPublic(remote); peer != nil {
		remote = peer.bind // relay-to-relay: reach the bound socket, not a NAT hairpin
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(tl.bind), Timeout: connectTimeout, Control: reuseControl}
	conn, err := d.Dial(c.Network, remote.String())
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, l: tl}, nil
}

func (t *relayTable) tcpByPublic(ap netip.AddrPort) *tcpRelayListener {
	t.tcpMu.Lock()
	defer t.tcpMu.Unlock()
	return t.tcp[ap]
}

// tcpRelayListener is the relayed transport address of an RFC 6062 TCP allocation.
type tcpRelayListener struct {
	net.Listener
	s      *Server
	bind   netip.AddrPort
	public netip.AddrPort
	alloc  atomic.Pointer[alloc]
	once   sync.Once
}

func (l *tcpRelayListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

func (l *tcpRelayListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.public) }

func (l *tcpRelayListener) Close() error {
	var err error
	l.once.Do(func() {
		err = l.Listener.Close()
		l.s.relays.tcpMu.Lock()
		if l.s.relays.tcp[l.public] == l {
			delete(l.s.relays.tcp, l.public)
		}
		l.s.relays.tcpMu.Unlock()
		l.s.relayClosed()
	})
	return err
}

// countingConn is a peer data connection of a TCP allocation: writes go to the peer, reads
// come from it; both are counted on the allocation.
type countingConn struct {
	net.Conn
	l *tcpRelayListener
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if a := c.l.alloc.Load(); a != nil && n > 0 {
		a.count(toClient, n)
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if a := c.l.alloc.Load(); a != nil && n > 0 {
		a.count(toPeer, n)
	}
	return n, err
}

// addrPortOf converts a *net.UDPAddr or *net.TCPAddr to an unmapped netip.AddrPort.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}
