package alloc

import (
	"time"

	"github.com/ferryrelay/ferry/relay/internal/bucket"
	"github.com/ferryrelay/ferry/relay/internal/stats"
)

// Caps are the bandwidth caps of the data path: token buckets over relayed payload bytes,
// one per direction (client to peer, peer to client) for each allocation, each user id (all
// its allocations together) and the server. A batch that a cap does not hold loses its tail:
// those packets are dropped and counted, never queued.
type Caps struct {
	// AllocationBitrate, UserBitrate and TotalBitrate are the caps in bits per second in
	// each direction; 0 means no cap.
	AllocationBitrate, UserBitrate, TotalBitrate int64
	// Burst is the depth of each bucket as time at its rate (a video key frame arrives
	// faster than the average), at least MinBurstBytes.
	Burst time.Duration
}

// MinBurstBytes is the least depth of a bandwidth bucket: a batch of a dozen full-size
// packets, and the 16 KiB an RFC 6062 data connection relays at a time.
const MinBurstBytes = 16 << 10

// The levels of caps, in the order a batch meets them.
const (
	capAllocation = iota
	capUser
	capServer
	numCaps
)

var capDrops = [numCaps]stats.Drop{stats.DropOverAllocationCap, stats.DropOverUserCap, stats.DropOverServerCap}

// capLimits are Caps ready for the data path; the Table holds nil when no cap is set, so
// that accounting a batch costs one pointer load.
type capLimits struct {
	on  [numCaps]bool
	lim [numCaps]bucket.Limit
}

// SetCaps replaces the bandwidth caps; the buckets keep their state, so a lowered cap holds at
// once and a raised one refills at the new rate.
func (t *Table) SetCaps(c Caps) {
	var cl capLimits
	set := false
	for i, bps := range [numCaps]int64{c.AllocationBitrate, c.UserBitrate, c.TotalBitrate} {
		if bps <= 0 {
			continue
		}
		bytesPerSec := float64(bps) / 8
		depth := max(bytesPerSec*c.Burst.Seconds(), MinBurstBytes)
		cl.on[i], cl.lim[i], set = true, bucket.NewLimit(bytesPerSec, depth), true
	}
	if !set {
		t.caps.Store(nil)
		return
	}
	t.caps.Store(&cl)
}

// admit applies the caps in c to a batch of payload lengths relayed by a in direction dir,
// and returns how many packets, from the front, go. With count it counts the packets the
// caps refused as drops; a later level's refusal gives the earlier levels their bytes back.
func (t *Table) admit(c *capLimits, a *Allocation, dir int, lens []int, count bool) int {
	now := t.mono()
	var user *bucket.Bucket
	if a.user != nil {
		user = &a.user.bw[dir]
	}
	buckets := [numCaps]*bucket.Bucket{&a.bw[dir], user, &t.bw[dir].Bucket}
	n := len(lens)
	var taken [numCaps]int64
	for lvl := range numCaps {
		if !c.on[lvl] || buckets[lvl] == nil {
			continue
		}
		k, cost := buckets[lvl].Take(&c.lim[lvl], now, lens[:n])
		taken[lvl] = cost
		if k == n {
			continue
		}
		if count {
			t.stats.DropN(capDrops[lvl], n-k)
		}
		refused := 0
		for _, l := range lens[k:n] {
			refused += l
		}
		for prev := range lvl {
			if c.on[prev] && buckets[prev] != nil {
				buckets[prev].Refund(c.lim[prev].Cost(refused))
			}
		}
		if n = k; n == 0 {
			return 0
		}
	}
	return n
}

// admitStream waits until the caps admit n bytes of an RFC 6062 data connection in direction
// dir, or the allocation ends (false). A stream cannot lose bytes: it slows down instead, and
// TCP's flow control pushes back to the sender.
func (a *Allocation) admitStream(dir, n int) bool {
	t := a.table
	lens := [1]int{n}
	for {
		c := t.caps.Load()
		if c == nil || t.admit(c, a, dir, lens[:], false) == 1 {
			return true
		}
		if a.Ended() {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// paddedBucket keeps a server-wide bucket on a cache line of its own: every event loop
// touches it.
type paddedBucket struct {
	bucket.Bucket
	_ [56]byte
}
