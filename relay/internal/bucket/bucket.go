// Package bucket is the relay's token bucket: lock-free, one atomic int64 per bucket, so that
// admitting a whole batch of packets (a bandwidth cap) or one answer (the pace of
// unauthenticated answers) costs a load and a compare-and-swap and allocates nothing.
//
// A bucket keeps the generic cell rate algorithm's theoretical arrival time (ITU-T I.371):
// the instant, in nanoseconds of the caller's clock, at which the bucket would be full again.
// Taking units moves it forward by their cost; the bucket holds what fits between now and
// now plus the limit's tolerance (its depth). That is exactly a token bucket of the same
// rate and depth, without a separate token count and timestamp to keep consistent.
//
// golang.org/x/time/rate does the same job behind a mutex per limiter and answers for one
// size at a time; the relay needs "how many packets of this batch fit" under contention from
// several event loops, so it uses this instead (see BenchmarkTake for the comparison).
package bucket

import (
	"math"
	"sync/atomic"
)

// Limit is the rate and depth of buckets. The zero Limit admits nothing; use NewLimit.
type Limit struct {
	interval  float64 // nanoseconds per unit
	tolerance int64   // the depth in nanoseconds: burst units × interval
}

// NewLimit returns the limit of perSecond units per second (> 0) and a depth of burst units
// (at least 1): a full bucket admits burst units at once, then perSecond per second.
func NewLimit(perSecond, burst float64) Limit {
	interval := 1e9 / perSecond
	return Limit{interval: interval, tolerance: int64(math.Ceil(max(burst, 1) * interval))}
}

// Burst returns the depth in units.
func (l Limit) Burst() float64 { return float64(l.tolerance) / l.interval }

// PerSecond returns the rate in units per second.
func (l Limit) PerSecond() float64 { return 1e9 / l.interval }

// Cost returns what units cost in nanoseconds of the bucket's time (what Refund takes).
func (l Limit) Cost(units int) int64 { return int64(float64(units) * l.interval) }

// Bucket is one token bucket. The zero value is full. It is safe for concurrent use; the
// limit is passed to each call, so buckets sharing a limit can have it changed at run time.
type Bucket struct {
	tat atomic.Int64 // theoretical arrival time: when the bucket is full again, in ns
}

// Take admits the longest prefix of sizes (units each, e.g. the payload bytes of packets)
// that the bucket holds at now (nanoseconds of a monotonic clock), takes it, and returns how
// many sizes it admitted and their cost, which Refund gives back.
func (b *Bucket) Take(l *Limit, now int64, sizes []int) (n int, cost int64) {
	for {
		old := b.tat.Load()
		tat := max(old, now)
		room := now + l.tolerance - tat // nanoseconds of capacity left
		if room <= 0 {
			return 0, 0
		}
		budget := float64(room) / l.interval
		sum := 0
		n = 0
		for n < len(sizes) && float64(sum+sizes[n]) <= budget {
			sum += sizes[n]
			n++
		}
		if n == 0 {
			return 0, 0
		}
		cost = int64(float64(sum) * l.interval)
		if b.tat.CompareAndSwap(old, tat+cost) {
			return n, cost
		}
	}
}

// TakeOne takes one unit when the bucket holds it at now, and reports whether it did.
func (b *Bucket) TakeOne(l *Limit, now int64) bool {
	for {
		old := b.tat.Load()
		tat := max(old, now)
		next := tat + int64(l.interval)
		if next-now > l.tolerance {
			return false
		}
		if b.tat.CompareAndSwap(old, next) {
			return true
		}
	}
}

// Refund gives back the cost of units taken but not used (a later cap refused them).
func (b *Bucket) Refund(cost int64) {
	if cost > 0 {
		b.tat.Add(-cost)
	}
}

// Full reports whether the bucket holds its whole depth at now (nothing taken recently).
func (b *Bucket) Full(now int64) bool { return b.tat.Load() <= now }
