package relay

import (
	"cmp"
	"errors"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
)

// Limits are the quotas, bandwidth caps and paces of a Server: what one client, one user
// or everyone together may take. Config carries the first ones; SetLimits replaces them while
// the server runs (a configuration reload), without touching live allocations.
type Limits struct {
	// MaxAllocations caps live allocations in total; beyond, Allocate gets 486 (RFC 8656
	// §7.2). Zero means no cap: the relay port range still bounds them (508 when full).
	MaxAllocations int
	// MaxAllocationsPerUser caps the live allocations of one user id (the part of a REST
	// username after the first ':', a static user's name; a credential without a user id
	// counts as a user of its own); beyond, 486. Zero means DefaultMaxAllocationsPerUser (8),
	// negative no cap.
	MaxAllocationsPerUser int
	// MaxPermissions caps the peer IP addresses one allocation holds permissions for, and
	// MaxChannels its channel bindings; beyond, 508 (RFC 8656 §9.2, §12.2). Zero means 64.
	MaxPermissions, MaxChannels int
	// AllocationBitrate, UserBitrate and TotalBitrate cap relayed payload in bits per second,
	// in each direction: of one allocation, of all allocations of one user id, and of the
	// whole server. Zero means no cap. Packets over a cap are dropped and counted
	// (ferry_turn_dropped_packets_total), never queued; the allocation lives on.
	AllocationBitrate, UserBitrate, TotalBitrate int64
	// BitrateBurst is the depth of each cap's token bucket as time at its rate (at least
	// 16 KiB), so that a video key frame passes; zero means DefaultBitrateBurst (200 ms).
	BitrateBurst time.Duration
	// UnauthRate (answers per second) and UnauthBurst pace answers sent without credentials
	// over UDP per source address (an IPv6 /64 counts as one). Zero means the defaults
	// (100/s, 1000); a negative rate turns pacing off.
	UnauthRate  float64
	UnauthBurst int
}

// control returns the limits as the control plane takes them, defaults resolved.
func (l Limits) control() control.Limits {
	perUser := cmp.Or(l.MaxAllocationsPerUser, DefaultMaxAllocationsPerUser)
	if perUser < 0 {
		perUser = 0
	}
	return control.Limits{MaxAllocations: max(l.MaxAllocations, 0), MaxAllocationsPerUser: perUser,
		MaxPermissions: l.MaxPermissions, MaxChannels: l.MaxChannels,
		Bandwidth: alloc.Caps{AllocationBitrate: l.AllocationBitrate, UserBitrate: l.UserBitrate,
			TotalBitrate: l.TotalBitrate, Burst: cmp.Or(l.BitrateBurst, DefaultBitrateBurst)},
		UnauthRate: l.UnauthRate, UnauthBurst: l.UnauthBurst}
}

// validate reports what is wrong with the limits.
func (l Limits) validate() []error {
	var errs []error
	if l.MaxPermissions < 0 || l.MaxChannels < 0 || l.UnauthBurst < 0 {
		errs = append(errs, errors.New("relay: permission, channel and burst limits cannot be negative"))
	}
	if l.AllocationBitrate < 0 || l.UserBitrate < 0 || l.TotalBitrate < 0 || l.BitrateBurst < 0 {
		errs = append(errs, errors.New("relay: bandwidth caps cannot be negative"))
	}
	return errs
}
