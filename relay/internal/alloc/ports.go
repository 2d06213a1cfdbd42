package alloc

import (
	crand "crypto/rand"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"
)

// portRange hands out relay ports of one address family in [min, max]. While any port of the
// range is free an Allocate gets one, whatever the range's size (operators use ranges of a
// few dozen ports for Docker or firewall rules): the search starts at a random port (RFC 8656
// §7.2 asks for unpredictable ports) and walks the whole range. A port another process holds
// fails to bind and is skipped.
type portRange struct {
	min, max uint16
	mu       sync.Mutex
	used     []uint64 // bit per port: relayed by an allocation of ours, or reserved
	reserved map[[8]byte]reservation
}

// reservation is the odd port kept for a later Allocate with RESERVATION-TOKEN after an
// EVEN-PORT request with the R bit (RFC 8656 §7.2, §14.6).
type reservation struct {
	port    uint16
	expires time.Time
}

// ReservationLifetime is how long a reserved port waits for its RESERVATION-TOKEN
// (RFC 8656 §7.2 suggests about 30 seconds).
const ReservationLifetime = 30 * time.Second

func newPortRange(min, max uint16) *portRange {
	n := int(max) - int(min) + 1
	return &portRange{min: min, max: max, used: make([]uint64, (n+63)/64), reserved: map[[8]byte]reservation{}}
}

func (p *portRange) size() int { return int(p.max) - int(p.min) + 1 }

// inUse counts the ports taken: relayed by an allocation of ours, or reserved.
func (p *portRange) inUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range p.used {
		n += bits.OnesCount64(w)
	}
	return n
}

func (p *portRange) isUsed(port uint16) bool {
	i := int(port - p.min)
	return p.used[i/64]&(1<<(i%64)) != 0
}

func (p *portRange) mark(port uint16, on bool) {
	i := int(port - p.min)
	if on {
		p.used[i/64] |= 1 << (i % 64)
	} else {
		p.used[i/64] &^= 1 << (i % 64)
	}
}

// acquire finds a free port (an even one with even; with pair, an even port whose next port
// is free too, which it marks as well) and calls bind for it outside the lock until bind
// succeeds. It returns the port, or false when no free port binds.
func (p *portRange) acquire(even, pair bool, bind func(port uint16) bool) (uint16, bool) {
	n := p.size()
	start := rand.N(n)
	for i := 0; i < n; i++ {
		off := (start + i) % n
		port := p.min + uint16(off)
		if (even || pair) && port%2 != 0 {
			continue
		}
		p.mu.Lock()
		free := !p.isUsed(port) && (!pair || (port < p.max && !p.isUsed(port+1)))
		if free {
			p.mark(port, true)
			if pair {
				p.mark(port+1, true)
			}
		}
		p.mu.Unlock()
		if !free {
			continue
		}
		if bind(port) {
			return port, true
		}
		p.mu.Lock()
		p.mark(port, false)
		if pair {
			p.mark(port+1, false)
		}
		p.mu.Unlock()
	}
	return 0, false
}

// release frees a port.
func (p *portRange) release(port uint16) {
	p.mu.Lock()
	p.mark(port, false)
	p.mu.Unlock()
}

// reserve keeps port (already marked) for a later Allocate and returns its token.
func (p *portRange) reserve(port uint16, now time.Time) [8]byte {
	var tok [8]byte
	_, _ = crand.Read(tok[:])
	p.mu.Lock()
	p.reserved[tok] = reservation{port: port, expires: now.Add(ReservationLifetime)}
	p.mu.Unlock()
	return tok
}

// takeReservation removes and returns the port reserved under tok.
func (p *portRange) takeReservation(tok [8]byte, now time.Time) (uint16, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.reserved[tok]
	if !ok || !now.Before(r.expires) {
		return 0, false
	}
	delete(p.reserved, tok)
	return r.port, true
}

// expireReservations frees reserved ports whose token was not used in time.
func (p *portRange) expireReservations(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for tok, r := range p.reserved {
		if !now.Before(r.expires) {
			delete(p.reserved, tok)
			p.mark(r.port, false)
		}
	}
}
