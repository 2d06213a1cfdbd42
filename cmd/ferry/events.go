package main

import (
	"net/netip"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/relay"
	"github.com/ferryrelay/ferry/signaling"
)

// relayEvents connects the relay's allocation events to the allocation log: relay and
// alloclog never import each other (DESIGN.md), main translates.
type relayEvents struct{ log *alloclog.Log }

func (e relayEvents) AllocationStarted(a relay.AllocationStart) {
	e.log.AllocationStarted(alloclog.Allocation{ID: a.ID, Start: a.Start, Transport: a.Transport.String(),
		Client: a.Client, Server: a.Server, Relayed: a.Relayed, UserID: a.UserID, Realm: a.Realm})
}

func (e relayEvents) PermissionCreated(id uint64, peer netip.Addr, at time.Time) {
	e.log.PermissionCreated(id, peer, at)
}

func (e relayEvents) AllocationEnded(x relay.AllocationEnd) {
	e.log.AllocationEnded(alloclog.AllocationEnd{ID: x.ID, End: x.End, Reason: x.Reason,
		BytesToPeer: x.BytesToPeer, PacketsToPeer: x.PacketsToPeer,
		BytesToClient: x.BytesToClient, PacketsToClient: x.PacketsToClient})
}

// accessEvents records signaling HTTP requests in the allocation log.
type accessEvents struct{ log *alloclog.Log }

func (e accessEvents) HTTPRequest(r signaling.AccessRecord) {
	e.log.HTTPRequest(alloclog.HTTPRequest{Time: r.Time, ClientIP: r.ClientIP, Route: r.Route,
		Status: r.Status, UserAgent: r.UserAgent})
}
