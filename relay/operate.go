package relay

import (
	"errors"
	"net/netip"

	"github.com/ferryrelay/ferry/relay/internal/control"
)

// This file is the relay's side of operating a running server: a configuration reload
// (SetLimits, SetPeerPolicy) and a drain (SetDraining), and what readiness checks read
// (Usage). Credentials reload through Config.Auth (auth.Authenticator.Update).

// DrainCode is the error code a new Allocate gets while the server drains: 508 Insufficient
// Capacity, after which RFC 8656 §7.4 has the client create no allocation on this server for
// at least a minute and turn to its other ICE servers.
const DrainCode = int(control.DrainCode)

// SetLimits replaces the quotas, bandwidth caps and paces (Limits) while the server runs.
// Each request's quota check and each batch of data sees the old or the new limits; live
// allocations keep what they hold beyond a lowered quota (a lowered MaxAllocations refuses
// new Allocates until enough end), and a lowered bandwidth cap holds from the next batch. It
// returns an error, and changes nothing, when l is invalid (negative caps).
func (s *Server) SetLimits(l Limits) error {
	if errs := l.validate(); len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.control.SetLimits(l.control())
	return nil
}

// SetPeerPolicy replaces the operator's peer ranges (Config.AllowedPeers and DeniedPeers);
// the default denials, Ferry's own addresses and ports stay. The new policy judges every
// CreatePermission, ChannelBind and Connect from then on, refreshes included, so a peer
// denied now loses its permission at the latest when it expires (300 s, RFC 8656 §9);
// permissions already installed are not torn down.
func (s *Server) SetPeerPolicy(allowed, denied []netip.Prefix) {
	cfg := s.cfg
	cfg.AllowedPeers, cfg.DeniedPeers = allowed, denied
	s.table.SetPolicy(peerPolicy(cfg))
}

// SetDraining turns draining on or off. While draining, every new Allocate gets DrainCode and
// everything else goes on as before: existing allocations relay, and their Refresh,
// CreatePermission, ChannelBind and RFC 6062 Connect/ConnectionBind requests are answered.
// AllocationCount says how many allocations remain.
func (s *Server) SetDraining(on bool) { s.control.SetDraining(on) }

// Draining reports whether new allocations are refused (SetDraining).
func (s *Server) Draining() bool { return s.control.Draining() }

// Usage is how full the server is, for readiness checks.
type Usage struct {
	// Allocations is the number of live allocations; MaxAllocations the cap (0: none).
	Allocations, MaxAllocations int
	// RelayPorts are the ports taken (by allocations and reservations) in the fullest relay
	// port range (one per address family, UDP and TCP relays apart), of RelayPortsTotal.
	RelayPorts, RelayPortsTotal int
}

// Usage returns how full the server is now. It takes two short locks: cheap enough for
// every readiness probe, not for the data path.
func (s *Server) Usage() Usage {
	inUse, total := s.table.RelayPorts()
	return Usage{Allocations: s.table.Count(), MaxAllocations: s.control.Limits().MaxAllocations,
		RelayPorts: inUse, RelayPortsTotal: total}
}
