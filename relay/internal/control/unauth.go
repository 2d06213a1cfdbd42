package control

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// unauthLimiter is a per-source token bucket for answers sent without authentication (401
// and 438 challenges, 400 and 420 errors, Binding responses): spoofed requests must not turn
// Ferry into an amplifier (C22; RFC 8489 §16, RFC 8656 §21). When too many sources are
// tracked, new ones share one bucket.
type unauthLimiter struct {
	mu       sync.Mutex
	limit    rate.Limit
	burst    int
	buckets  map[netip.Addr]*rate.Limiter
	overflow *rate.Limiter
}

const maxLimiterSources = 65536

func newUnauthLimiter(perSecond float64, burst int) *unauthLimiter {
	return &unauthLimiter{limit: rate.Limit(perSecond), burst: burst,
		buckets:  map[netip.Addr]*rate.Limiter{},
		overflow: rate.NewLimiter(rate.Limit(perSecond)*16, burst*16)}
}

func (u *unauthLimiter) allow(ip netip.Addr, now time.Time) bool {
	if u.limit <= 0 {
		return true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	l, ok := u.buckets[ip]
	if !ok {
		if len(u.buckets) >= maxLimiterSources {
			return u.overflow.AllowN(now, 1)
		}
		l = rate.NewLimiter(u.limit, u.burst)
		u.buckets[ip] = l
	}
	return l.AllowN(now, 1)
}

// sweep forgets sources whose bucket is full again.
func (u *unauthLimiter) sweep(now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for ip, l := range u.buckets {
		if l.TokensAt(now) >= float64(u.burst) {
			delete(u.buckets, ip)
		}
	}
}
