package main

import (
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/relay"
)

// relayLimits maps the configuration's quotas, bandwidth caps and pace of unauthenticated
// answers onto the relay's Limits: what serve starts with, and what a reload hands to
// relay.Server.SetLimits. In the configuration 0 is "no cap" for the allocation quotas; the
// relay says that with a negative number.
func relayLimits(f *config.File) relay.Limits {
	r := f.Relay
	perUser := r.MaxAllocationsUser
	if perUser == 0 {
		perUser = -1
	}
	return relay.Limits{
		MaxAllocations: r.MaxAllocations, MaxAllocationsPerUser: perUser,
		MaxPermissions: r.MaxPermissions, MaxChannels: r.MaxChannels,
		AllocationBitrate: int64(r.BandwidthAllocation), UserBitrate: int64(r.BandwidthUser),
		TotalBitrate: int64(r.BandwidthTotal), BitrateBurst: r.BandwidthBurst,
		UnauthRate: r.UnauthRate, UnauthBurst: r.UnauthBurst,
	}
}
