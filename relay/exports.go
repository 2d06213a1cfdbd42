package relay

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// Transport is a client transport: how the client reaches Ferry (the 5-tuple's protocol,
// TLS told apart from TCP). Its String is the metric label: "udp", "tcp" or "tls".
type Transport = wire.Transport

// Client transports.
const (
	UDP = wire.UDP
	TCP = wire.TCP
	TLS = wire.TLS
)

// EventSink receives allocation lifecycle events, in order per allocation (the allocation
// log). Implementations must return quickly and never block the relay; they are called from
// the control path, never per packet.
type EventSink = alloc.EventSink

// AllocationStart describes a new allocation; it holds personal data (IP addresses, the user
// id) and must only ever reach the allocation log.
type AllocationStart = alloc.AllocationStart

// AllocationEnd describes an ended allocation with its traffic totals.
type AllocationEnd = alloc.AllocationEnd

// End reasons of an allocation (AllocationEnd.Reason).
const (
	EndExpired       = alloc.EndExpired       // its lifetime ran out without a Refresh
	EndDeletedClient = alloc.EndDeletedClient // Refresh with LIFETIME 0 (RFC 8656 §7.3)
	EndConnClosed    = alloc.EndConnClosed    // the client's TCP/TLS connection closed
	EndShutdown      = alloc.EndShutdown      // Ferry stopped
	EndMaxAge        = alloc.EndMaxAge        // it reached the maximum allocation age
)

// MaxUDPSockets bounds the SO_REUSEPORT sockets ListenUDP opens for one address.
const MaxUDPSockets = sockopt.MaxUDPSockets

// ListenUDP opens n UDP sockets ("udp", "udp4" or "udp6") on one address with SO_REUSEPORT,
// so that the kernel spreads clients over them by 5-tuple hash (Linux; elsewhere one socket).
// It refuses an address another process holds (EADDRINUSE) rather than share its traffic.
// bufBytes > 0 sets each socket's receive and send buffers; 0 keeps the kernel default.
func ListenUDP(ctx context.Context, network, addr string, n, bufBytes int) ([]*net.UDPConn, error) {
	return sockopt.ListenUDP(ctx, network, addr, n, bufBytes)
}

// SetSocketBuffers asks for receive and send buffers of bytes each on a *net.UDPConn or
// *net.TCPConn, past the kernel's caps where Ferry may (CAP_NET_ADMIN), and returns the
// smaller size granted: less than bytes means the kernel capped it.
func SetSocketBuffers(c syscall.Conn, bytes int) (int, error) {
	return sockopt.SetSocketBuffers(c, bytes)
}

// PeerDenial returns why the default peer policy (no operator lists) refuses ip as a peer —
// one of the reasons of ferry_turn_peer_denials_total, such as "private" or "loopback" — or
// "" when a peer on the internet may have it. Operators use it to tell whether an address is
// publicly routable.
func PeerDenial(ip netip.Addr) string {
	_, reason := policy.New(nil, nil, nil, nil).Check(ip)
	return reason
}
