package alloc

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/pion/stun/v4"
)

// TCP allocations (RFC 6062): the relayed transport address is a TCP listener; each peer
// connection, made by Connect or accepted from a peer, is bound by the client to a new TCP
// connection of its own (ConnectionBind), and from then on the two are spliced byte for
// byte.

// ConnectTimeout bounds a Connect to a peer (RFC 6062 §5.2: at least 30 s).
const ConnectTimeout = 30 * time.Second

// bindTimeout is how long a peer connection waits for the client's ConnectionBind
// (RFC 6062 §5.2, §5.3: 30 s).
const bindTimeout = 30 * time.Second

// tcpRelay is the relayed transport address of a TCP allocation.
type tcpRelay struct {
	ln   net.Listener
	bind netip.AddrPort
}

// Errors of Connect and TakeConnection.
var (
	ErrNotTCP        = errors.New("relay: not a TCP allocation")                     // 400
	ErrConnExists    = errors.New("relay: a connection to this peer already exists") // 446
	ErrConnFailed    = errors.New("relay: connection to the peer failed")            // 447
	ErrUnknownConnID = errors.New("relay: unknown connection id")                    // 400
)

func (t *Table) openTCPRelay(a *Allocation, f *family, port uint16) error {
	bind := netip.AddrPortFrom(f.bind, port)
	lc := net.ListenConfig{Control: sockopt.ReuseAddrPort}
	ln, err := lc.Listen(context.Background(), "tcp", bind.String())
	if err != nil {
		return err
	}
	a.tcp = &tcpRelay{ln: ln, bind: bind}
	a.Relayed = netip.AddrPortFrom(f.public, port)
	t.tcpMu.Lock()
	t.tcpByIP[a.Relayed] = a
	t.tcpMu.Unlock()
	t.wg.Go(func() { t.acceptPeers(a) })
	return nil
}

func (t *Table) closeTCPRelay(a *Allocation) {
	t.tcpMu.Lock()
	if t.tcpByIP[a.Relayed] == a {
		delete(t.tcpByIP, a.Relayed)
	}
	t.tcpMu.Unlock()
	_ = a.tcp.ln.Close()
	t.conns.closeOf(a)
}

func (t *Table) tcpByRelayed(ap netip.AddrPort) *Allocation {
	t.tcpMu.Lock()
	defer t.tcpMu.Unlock()
	return t.tcpByIP[ap]
}

// acceptPeers takes connections from peers on a's relayed transport address: a peer with a
// permission is announced to the client with a ConnectionAttempt indication (RFC 6062 §5.3);
// others are closed at once.
func (t *Table) acceptPeers(a *Allocation) {
	for {
		c, err := a.tcp.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors and the like
			continue
		}
		remote := sockopt.AddrPort(c.RemoteAddr())
		// A connection from another TCP relayed transport address of ours comes from its
		// bind address; its permission was installed for the advertised one.
		if other := t.tcpByBind(remote); other != nil {
			remote = other.Relayed
		}
		if !a.HasPermission(remote.Addr()) {
			t.stats.Drop(stats.DropNoPermission)
			_ = c.Close()
			continue
		}
		id, ok := t.conns.add(a, remote, c, t.now())
		if !ok {
			_ = c.Close()
			continue
		}
		if err := t.announce(a, id, remote); err != nil {
			t.conns.drop(id)
		}
	}
}

func (t *Table) tcpByBind(ap netip.AddrPort) *Allocation {
	t.tcpMu.Lock()
	defer t.tcpMu.Unlock()
	for _, a := range t.tcpByIP {
		if a.tcp.bind == ap {
			return a
		}
	}
	return nil
}

// announce sends a ConnectionAttempt indication for connection id from peer to a's client.
func (t *Table) announce(a *Allocation, id uint32, peer netip.AddrPort) error {
	if a.client.Stream == nil {
		return ErrNotTCP
	}
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodConnectionAttempt, stun.ClassIndication),
		XORAddr(stun.AttrXORPeerAddress, peer), connID(id))
	if err != nil {
		return err
	}
	_, err = a.client.Stream.Write(m.Raw)
	return err
}

// XORAddr is a setter for an XOR-encoded address attribute of type typ (XOR-PEER-ADDRESS,
// XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS; RFC 8489 §14.2).
func XORAddr(typ stun.AttrType, ap netip.AddrPort) stun.Setter {
	return xorAddr{typ, ap}
}

type xorAddr struct {
	typ stun.AttrType
	ap  netip.AddrPort
}

func (x xorAddr) AddTo(m *stun.Message) error {
	return stun.XORMappedAddress{IP: x.ap.Addr().AsSlice(), Port: int(x.ap.Port())}.AddToAs(m, x.typ)
}

// connID is a CONNECTION-ID attribute (RFC 6062 §6.2.1).
type connID uint32

func (c connID) AddTo(m *stun.Message) error {
	m.Add(stun.AttrConnectionID, []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
	return nil
}

// Connect opens a TCP connection from a's relayed transport address to peer (RFC 6062 §5.2)
// and returns its connection id for ConnectionBind. The peer must already be allowed by
// CheckPeer; a connection to our own relayed address goes to its bound socket.
func (t *Table) Connect(ctx context.Context, a *Allocation, peer netip.AddrPort) (uint32, error) {
	if a.tcp == nil {
		return 0, ErrNotTCP
	}
	if t.conns.hasPeer(a, peer) {
		return 0, ErrConnExists
	}
	dst := peer
	if other := t.tcpByRelayed(peer); other != nil {
		dst = other.tcp.bind // relay-to-relay: the bound socket, not a NAT hairpin
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(a.tcp.bind), Timeout: ConnectTimeout, Control: sockopt.ReuseAddrPort}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return 0, ErrConnFailed
	}
	id, ok := t.conns.add(a, peer, c, t.now())
	if !ok {
		_ = c.Close()
		return 0, ErrConnExists
	}
	return id, nil
}

// PeerConn is a peer connection of a TCP allocation, bound to a client's data connection.
type PeerConn struct {
	net.Conn
	Alloc *Allocation
}

// ConnectionOwner returns the allocation of the pending peer connection with id, or nil.
func (t *Table) ConnectionOwner(id uint32) *Allocation {
	t.conns.mu.Lock()
	defer t.conns.mu.Unlock()
	if p, ok := t.conns.pending[id]; ok {
		return p.a
	}
	return nil
}

// TakeConnection hands the peer connection with id to a ConnectionBind (RFC 6062 §5.4).
func (t *Table) TakeConnection(id uint32) (*PeerConn, error) {
	p, ok := t.conns.take(id)
	if !ok {
		return nil, ErrUnknownConnID
	}
	return &PeerConn{Conn: p.conn, Alloc: p.a}, nil
}

// Splice relays bytes both ways between a client's data connection and its peer connection
// until either side closes or the allocation ends, counting them on the allocation. It
// returns when both directions have stopped.
func (t *Table) Splice(client io.ReadWriteCloser, pc *PeerConn) {
	t.conns.track(pc)
	defer t.conns.untrack(pc)
	var wg sync.WaitGroup
	wg.Go(func() {
		copyCounted(pc.Conn, client, pc.Alloc, stats.ToPeer)
		_ = pc.Close()
	})
	copyCounted(client, pc.Conn, pc.Alloc, stats.ToClient)
	_ = client.Close()
	_ = pc.Close()
	wg.Wait()
}

func copyCounted(dst io.Writer, src io.Reader, a *Allocation, dir int) {
	buf := make([]byte, 16<<10)
	var lens [1]int
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !a.admitStream(dir, n) {
				return
			}
			lens[0] = n
			a.count(dir, lens[:])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// connTable holds the peer connections of TCP allocations: pending ones by connection id,
// and bound ones, so that ending an allocation closes all of them.
type connTable struct {
	mu      sync.Mutex
	pending map[uint32]*pendingConn
	bound   map[*PeerConn]struct{}
}

type pendingConn struct {
	a     *Allocation
	peer  netip.AddrPort
	conn  net.Conn
	since time.Time
}

func (c *connTable) init() {
	c.pending = map[uint32]*pendingConn{}
	c.bound = map[*PeerConn]struct{}{}
}

// maxPendingConns bounds peer connections awaiting ConnectionBind, over all allocations.
const maxPendingConns = 4096

func (c *connTable) add(a *Allocation, peer netip.AddrPort, conn net.Conn, now time.Time) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) >= maxPendingConns {
		return 0, false
	}
	for {
		id := rand.Uint32()
		if _, taken := c.pending[id]; !taken && id != 0 {
			c.pending[id] = &pendingConn{a: a, peer: peer, conn: conn, since: now}
			return id, true
		}
	}
}

func (c *connTable) hasPeer(a *Allocation, peer netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pending {
		if p.a == a && p.peer == peer {
			return true
		}
	}
	for p := range c.bound {
		if p.Alloc == a && sockopt.AddrPort(p.RemoteAddr()) == peer {
			return true
		}
	}
	return false
}

func (c *connTable) take(id uint32) (*pendingConn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[id]
	if ok {
		delete(c.pending, id)
	}
	return p, ok
}

func (c *connTable) drop(id uint32) {
	if p, ok := c.take(id); ok {
		_ = p.conn.Close()
	}
}

func (c *connTable) track(p *PeerConn) {
	c.mu.Lock()
	c.bound[p] = struct{}{}
	c.mu.Unlock()
}

func (c *connTable) untrack(p *PeerConn) {
	c.mu.Lock()
	delete(c.bound, p)
	c.mu.Unlock()
}

// expire closes peer connections that waited longer than bindTimeout.
func (c *connTable) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, p := range c.pending {
		if now.Sub(p.since) >= bindTimeout {
			delete(c.pending, id)
			_ = p.conn.Close()
		}
	}
}

// closeOf closes every peer connection of a.
func (c *connTable) closeOf(a *Allocation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, p := range c.pending {
		if p.a == a {
			delete(c.pending, id)
			_ = p.conn.Close()
		}
	}
	for p := range c.bound {
		if p.Alloc == a {
			_ = p.Close()
		}
	}
}

func (c *connTable) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, p := range c.pending {
		delete(c.pending, id)
		_ = p.conn.Close()
	}
	for p := range c.bound {
		_ = p.Close()
	}
}
