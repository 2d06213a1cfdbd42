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
// to, or the socket of a relayed transport address.
type Socket struct {
	*net.UDPConn
	rc syscall.RawConn
	v6 bool // AF_INET6: IPv4 destinations are written IPv4-mapped
}

// NewSocket wraps c for batched I/O.
func NewSocket(c *net.UDPConn) (*Socket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return &Socket{UDPConn: c, rc: rc, v6: mmsg.IsV6(c)}, nil
}

// RawConn returns the socket's raw handle.
func (s *Socket) RawConn() syscall.RawConn { return s.rc }

// V6 reports whether the socket is AF_INET6.
func (s *Socket) V6() bool { return s.v6 }

// Client is the way back to an allocation's client: the listener socket and the client's
// address for UDP, or the client's connection for TCP and TLS.
type Client struct {
	UDP  *Socket        // the listener socket of the 5-tuple; nil for streams
	Addr netip.AddrPort // the client's transport address
	// Stream is the client's TCP/TLS connection: each Write must send one whole buffer and be
	// safe for concurrent use (net.TCPConn and tls.Conn are). Nil for UDP.
	Stream io.Writer
	// Ended, if set, is called once when the allocation ends (a stream connection then
	// falls back to its idle deadline).
	Ended func()
}

// relaySocket is the UDP socket of a relayed transport address. Its reader goroutine relays
// what peers send to the allocation's client; it exits when the socket closes.
type relaySocket struct {
	*Socket
	bind   netip.AddrPort // the socket's address
	public netip.AddrPort // as advertised (XOR-RELAYED-ADDRESS)
}

// sendBatch writes the first k datagrams of b on s: as one UDP GSO send when they go to one
// destination with equal sizes (the last may be shorter), else with sendmmsg. It returns how
// many were sent. gso is scratch room for the GSO copy (nil: no GSO).
func sendBatch(w *mmsg.Writer, s *Socket, b *mmsg.Batch, k int, gso []byte) int {
	if k >= 2 && k <= mmsg.MaxGSOSegments && len(gso) > 0 && mmsg.GSOAvailable() {
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
