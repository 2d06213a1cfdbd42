package main

import (
	"net/netip"

	"github.com/ferryrelay/ferry/relay"
)

// relayNode is what serve, reload and drain use of the relay: a *relay.Server, or noRelay on
// a node whose server.role is signaling.
type relayNode interface {
	AllocationCount() int
	Ready() bool
	Usage() relay.Usage
	Draining() bool
	SetDraining(on bool)
	SetLimits(l relay.Limits) error
	SetPeerPolicy(allowed, denied []netip.Prefix)
	Close() error
}

// noRelay stands in for the relay on a signaling node: no allocations, nothing to drain.
type noRelay struct{}

func (noRelay) AllocationCount() int              { return 0 }
func (noRelay) Ready() bool                       { return true }
func (noRelay) Usage() relay.Usage                { return relay.Usage{} }
func (noRelay) Draining() bool                    { return false }
func (noRelay) SetDraining(bool)                  {}
func (noRelay) SetLimits(relay.Limits) error      { return nil }
func (noRelay) SetPeerPolicy(_, _ []netip.Prefix) {}
func (noRelay) Close() error                      { return nil }
