package listen

import (
	"net/netip"
	"sync"

	"github.com/ferryrelay/ferry/relay/internal/stats"
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

func newConnLimits(perIP, total int) *connLimits {
	return &connLimits{perIP: perIP, total: total, bySource: map[netip.Addr]int{}}
}

// acquire takes a slot for a connection from ip; it returns the refusal reason, or "".
func (c *connLimits) acquire(ip netip.Addr) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.total > 0 && c.count >= c.total:
		return stats.RefusedTotal
	case c.perIP > 0 && c.bySource[ip] >= c.perIP:
		return stats.RefusedPerIP
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
