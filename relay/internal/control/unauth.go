package control

import (
	"hash/maphash"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/bucket"
)

// unauthLimiter paces answers sent without authentication (401 and 438 challenges, 400 and
// 420 errors, Binding responses) per source: spoofed requests must not turn Ferry into a
// cannon aimed at one victim (C22; RFC 8489 §16, RFC 8656 §21). A source is an IPv4 address,
// or an IPv6 /64: one household or clinic network, and what one attacker holds.
//
// Sources hash (with a random seed) into a fixed table of lock-free token buckets, so that a
// flood from any number of addresses creates no state and takes no lock (C35); sources that
// share a slot share its pace. With 65,536 slots, draining every slot takes an attacker
// 65,536 times the rate, about 6.5 million requests per second at the default.
type unauthLimiter struct {
	seed  maphash.Seed
	limit atomic.Pointer[bucket.Limit] // nil: no pacing
	slots []bucket.Bucket
}

const unauthSlots = 1 << 16

func newUnauthLimiter() *unauthLimiter {
	return &unauthLimiter{seed: maphash.MakeSeed(), slots: make([]bucket.Bucket, unauthSlots)}
}

// set changes the pace: perSecond answers a second per source with a burst of burst; a
// negative perSecond turns pacing off.
func (u *unauthLimiter) set(perSecond float64, burst int) {
	if perSecond < 0 {
		u.limit.Store(nil)
		return
	}
	l := bucket.NewLimit(perSecond, float64(max(burst, 1)))
	u.limit.Store(&l)
}

// allow takes one answer from ip's pace at now and reports whether it may be sent.
func (u *unauthLimiter) allow(ip netip.Addr, now time.Time) bool {
	l := u.limit.Load()
	if l == nil {
		return true
	}
	return u.slots[u.slot(ip)].TakeOne(l, now.UnixNano())
}

// slot returns the bucket index of ip's source: the address, or its /64 for IPv6.
func (u *unauthLimiter) slot(ip netip.Addr) uint32 {
	ip = ip.Unmap()
	var key [16]byte
	if ip.Is4() {
		a := ip.As4()
		copy(key[:], a[:])
	} else {
		a := ip.As16()
		copy(key[:8], a[:8])
		key[15] = 6
	}
	return uint32(maphash.Bytes(u.seed, key[:]) % unauthSlots)
}
