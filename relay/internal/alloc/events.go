package alloc

import (
	"net/netip"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// End reasons of an allocation, as recorded in AllocationEnd.Reason.
const (
	EndExpired       = "expired"           // its lifetime ran out without a Refresh
	EndDeletedClient = "deleted_by_client" // Refresh with LIFETIME 0 (RFC 8656 §7.3)
	EndConnClosed    = "connection_closed" // the client's TCP/TLS connection closed
	EndShutdown      = "shutdown"          // Ferry stopped
	EndMaxAge        = "max_age"           // it reached relay.max_allocation_age
)

// AllocationStart describes a new allocation. It holds personal data (IP addresses, the user
// id) and must only ever reach the allocation log.
type AllocationStart struct {
	ID        uint64
	Start     time.Time
	Transport wire.Transport
	Client    netip.AddrPort // client's transport address as seen by Ferry
	Server    netip.AddrPort // Ferry's listener address of the 5-tuple
	Relayed   netip.AddrPort // relayed transport address (advertised form)
	UserID    string         // the user id of the credential
	Realm     string
}

// AllocationEnd describes an ended allocation with its traffic totals.
type AllocationEnd struct {
	ID     uint64
	End    time.Time
	Reason string // one of the End* constants
	// Payload bytes and packets relayed, by direction.
	BytesToPeer, PacketsToPeer     uint64
	BytesToClient, PacketsToClient uint64
}

// EventSink receives allocation lifecycle events, in order per allocation. Implementations
// must return quickly and never block the relay (queue and drop instead); the relay calls
// them from its control path, never per packet.
type EventSink interface {
	AllocationStarted(AllocationStart)
	// PermissionCreated reports the first permission of an allocation for peer.
	PermissionCreated(id uint64, peer netip.Addr, at time.Time)
	AllocationEnded(AllocationEnd)
}

type nopSink struct{}

func (nopSink) AllocationStarted(AllocationStart)               {}
func (nopSink) PermissionCreated(uint64, netip.Addr, time.Time) {}
func (nopSink) AllocationEnded(AllocationEnd)                   {}
