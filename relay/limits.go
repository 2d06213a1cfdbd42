package relay

import (
	"net/netip"
	"sync"
	"time"
)

// connLimits caps TCP/TLS connections (pending handshakes included) per source IP and in
// total, so that one address cannot take every file descriptor or handshake slot.
type connLimits struct {
	mu       sync.Mutex
	perIP    int
	total    int
	bySource map[netip.Addr]int
	count    int
}

// Connection refusal reasons (ferry_turn_connections_refused_total).
const (
	refusedPerIP      = "per_ip"
	refusedTotal      = "total"
	refusedHandshakes = "handshakes"
)

func newConnLimits(perIP, total int) *connLimits {
	return &connLimits{perIP: perIP, total: total, bySource: map[netip.Addr]int{}}
}

// acquire takes a slot for a connection from ip; it returns the refusal reason, or "".
func (c *connLimits) acquire(ip netip.Addr) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.total > 0 && c.count >= c.total:
		return refusedTotal
	case c.perIP > 0 && c.bySource[ip] >= c.perIP:
		return refusedPerIP
	}
	c.bySource[ip]++
	c.count++
	return ""
}

func (c *connLimits) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.bySource[ip]; n <= 1 {
		delete(c.bySource, ip)
	} else {
		c.bySource[ip] = n - 1
	}
	c.count--
}

func (c *connLimits) active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// quotaReservations counts Allocate requests that passed the quota check but whose
// allocation pion has not reported yet, so that concurrent requests cannot slip past a cap.
// A reservation is consumed when the allocation appears, or forgotten after a few seconds
// (pion refused the request after the quota check).
type quotaReservations struct {
	mu      sync.Mutex
	pending map[string][]time.Time // by user id
	total   int
}

const reservationTTL = 5 * time.Second

func (q *quotaReservations) reserve(userID string, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending == nil {
		q.pending = map[string][]time.Time{}
	}
	q.pending[userID] = append(q.pending[userID], now)
	q.total++
}

// counts returns the live reservations: all, and userID's.
func (q *quotaReservations) counts(userID string, now time.Time) (total, user int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.expire(now)
	return q.total, len(q.pending[userID])
}

// consume drops the oldest reservation of userID (its allocation now exists).
func (q *quotaReservations) consume(userID string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := q.pending[userID]; len(r) > 0 {
		q.pending[userID] = r[1:]
		if len(r) == 1 {
			delete(q.pending, userID)
		}
		q.total--
	}
}

func (q *quotaReservations) expire(now time.Time) {
	for u, r := range q.pending {
		i := 0
		for i < len(r) && now.Sub(r[i]) > reservationTTL {
			i++
		}
		if i == len(r) {
			delete(q.pending, u)
		} else {
			q.pending[u] = r[i:]
		}
		q.total -= i
	}
}
