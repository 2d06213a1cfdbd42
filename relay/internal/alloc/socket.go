package alloc

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"

	"github.com/ferryrelay/ferry/internal/mmsg"
)

// Socket is a UDP socket with its raw handle for batched I/O: a listener socket clients send
// to, or the socket of a relayed transport address. It is either a *net.UDPConn, read
// through Go's poller by a goroutine, or (Linux) a bare descriptor that an event loop
// watches (a Poller): then no goroutine and no poller state exist per socket.
type Socket struct {
	conn *net.UDPConn // nil for a bare descriptor
	raw  *rawFD       // nil for a conn
	rc   syscall.RawConn
	v6   bool // AF_INET6: IPv4 destinations are written IPv4-mapped
}

// NewSocket wraps c for batched I/O.
func NewSocket(c *net.UDPConn) (*Socket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return &Socket{conn: c, rc: rc, v6: mmsg.IsV6(c)}, nil
}

// RawConn returns the socket's raw handle.
func (s *Socket) RawConn() syscall.RawConn { return s.rc }

// V6 reports whether the socket is AF_INET6.
func (s *Socket) V6() bool { return s.v6 }

// Conn returns the *net.UDPConn, or nil for a bare descriptor.
func (s *Socket) Conn() *net.UDPConn { return s.conn }

// SendTo sends one datagram to to without waiting: a full send buffer drops it.
func (s *Socket) SendTo(b []byte, to netip.AddrPort) error {
	if s.conn != nil {
		_, err := s.conn.WriteToUDPAddrPort(b, to)
		return err
	}
	return sendTo(s.raw, b, to, s.v6)
}

// Close closes the socket (a bare descriptor once no event loop uses it any more).
func (s *Socket) Close() error {
	if s.conn != nil {
		return s.conn.Close()
	}
	s.raw.close()
	return nil
}

// errClosed is returned for I/O on a closed bare descriptor.
var errClosed = net.ErrClosed

// Poller is the event loop of a listener socket (Linux: an epoll loop per socket of a
// SO_REUSEPORT group). The relay sockets of its clients' allocations join the same loop,
// so one thread serves both directions of an allocation, with no goroutine per allocation
// and no hand-off between goroutines. A Poller reads a relay socket when it is readable by
// calling RelayReader.Readable with the token it was given.
type Poller interface {
	// Watch starts watching the descriptor fd for readability, reporting token.
	Watch(fd int, token uint64) error
}

// Client is the way back to an allocation's client: the listener socket and the client's
// address for UDP, or the client's connection for TCP and TLS.
type Client struct {
	UDP  *Socket        // the listener socket of the 5-tuple; nil for streams
	Addr netip.AddrPort // the client's transport address
	// Stream is the client's TCP/TLS connection: each Write must send one whole buffer and be
	// safe for concurrent use (net.TCPConn and tls.Conn are). Nil for UDP.
	Stream io.Writer
	// Poller, when set, watches the relay socket of a UDP client's allocation; nil: a
	// goroutine reads it.
	Poller Poller
	// Ended, if set, is called once when the allocation ends (a stream connection then
	// falls back to its idle deadline).
	Ended func()
}

// relaySocket is the UDP socket of a relayed transport address.
type relaySocket struct {
	*Socket
	bind   netip.AddrPort // the socket's address
	public netip.AddrPort // as advertised (XOR-RELAYED-ADDRESS)
	token  uint64         // a watched socket's token (slot and generation); 0 otherwise
}

// sendBatch writes the first k datagrams of b on s: as one UDP GSO send when they go to one
// destination with equal sizes (the last may be shorter), else with sendmmsg. It returns how
// many were sent. gso is scratch room for the GSO copy (nil: no GSO).
func sendBatch(w *mmsg.Writer, s *Socket, b *mmsg.Batch, k int, gso []byte) int {
	if k >= 2 && k <= mmsg.MaxGSOSegments && len(gso) > 0 && mmsg.GSOAvailable() {
		seg, total, ok := b.Lens[0], 0, true
		for i := 0; i < k && ok; i++ {
			ok = b.Addrs[i] == b.Addrs[0] && (b.Lens[i] == seg || (i == k-1 && b.Lens[i] > 0 && b.Lens[i] <= seg))
			total += b.Lens[i]
		}
		if ok && total <= len(gso) && total <= maxDatagram-8 {
			off := 0
			for i := 0; i < k; i++ {
				off += copy(gso[off:], b.Bufs[i][:b.Lens[i]])
			}
			if used, err := w.WriteGSO(s.rc, s.v6, gso[:off], seg, b.Addrs[0]); used {
				if err != nil {
					return 0
				}
				return k
			}
		}
	}
	sent, _ := w.Write(s.rc, s.v6, b, k)
	return sent
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535
