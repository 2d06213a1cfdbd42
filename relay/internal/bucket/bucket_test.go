package bucket

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// A full bucket admits its depth at once, then the rate; a batch is admitted by its longest
// prefix that fits, never partly.
func TestTakeRateAndDepth(t *testing.T) {
	l := NewLimit(1000, 100) // 1000 units/s, depth 100
	var b Bucket
	now := int64(5 * time.Second)
	if n, _ := b.Take(&l, now, []int{60, 30, 20}); n != 2 {
		t.Fatalf("full bucket of 100: admitted %d of 60+30+20, want 2", n)
	}
	if n, _ := b.Take(&l, now, []int{20}); n != 0 {
		t.Fatalf("10 left: admitted a 20")
	}
	if n, _ := b.Take(&l, now, []int{10}); n != 1 {
		t.Fatalf("10 left: refused a 10")
	}
	now += int64(50 * time.Millisecond) // 50 units refilled
	if n, _ := b.Take(&l, now, []int{50, 1}); n != 1 {
		t.Fatalf("after 50 ms: admitted %d, want the 50 only", n)
	}
	now += int64(time.Hour) // refills to the depth, no further
	if n, _ := b.Take(&l, now, []int{100, 1}); n != 1 {
		t.Fatalf("after an hour: admitted %d, want 100 and no more", n)
	}
	if !(&Bucket{}).Full(now) || b.Full(now) {
		t.Fatal("Full")
	}
}

// Over a long run the bucket admits exactly its rate (plus the depth once), whatever the
// sizes and the spacing of the batches.
func TestTakeLongRun(t *testing.T) {
	l := NewLimit(375_000, 75_000) // 3 Mbit/s in bytes, 200 ms deep
	var b Bucket
	admitted := 0
	now := int64(0)
	sizes := []int{1200, 1200, 1200, 300, 1200, 80, 1200, 1200}
	for now < int64(10*time.Second) {
		n, _ := b.Take(&l, now, sizes)
		for _, s := range sizes[:n] {
			admitted += s
		}
		now += int64(3 * time.Millisecond)
	}
	want := 375_000*10 + 75_000
	if d := float64(admitted-want) / float64(want); d > 0.001 || d < -0.01 {
		t.Fatalf("admitted %d bytes in 10 s, want %d (%.2f%%)", admitted, want, 100*d)
	}
}

func TestTakeOneAndRefund(t *testing.T) {
	l := NewLimit(10, 3)
	var b Bucket
	now := int64(time.Hour)
	for i := range 3 {
		if !b.TakeOne(&l, now) {
			t.Fatalf("answer %d of a burst of 3 refused", i+1)
		}
	}
	if b.TakeOne(&l, now) {
		t.Fatal("a 4th answer in a burst of 3")
	}
	if !b.TakeOne(&l, now+int64(100*time.Millisecond)) {
		t.Fatal("no answer 100 ms later at 10/s")
	}
	n, cost := (&b).Take(&l, now+int64(time.Second), []int{2})
	if n != 1 {
		t.Fatal("2 units after a second")
	}
	b.Refund(cost)
	if n, _ := b.Take(&l, now+int64(time.Second), []int{3}); n != 1 {
		t.Fatal("a refund did not give the units back")
	}
}

// Concurrent takers never get more than the rate and the depth between them.
func TestTakeConcurrent(t *testing.T) {
	l := NewLimit(1e6, 10_000)
	var b Bucket
	var clock atomic.Int64
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			sizes := []int{100, 100, 100, 100}
			for range 20_000 {
				now := clock.Add(1000) // 1 µs per call over all takers
				n, _ := b.Take(&l, now, sizes)
				admitted.Add(int64(100 * n))
			}
		})
	}
	wg.Wait()
	limit := clock.Load()/1000 + 10_000 // 1 unit per µs, plus the depth
	if got := admitted.Load(); got > limit || got < limit*9/10 {
		t.Fatalf("admitted %d units, want at most %d and close to it", got, limit)
	}
}

// BenchmarkTake compares this bucket with golang.org/x/time/rate on what the relay does per
// batch: admit a batch of 8 packets of 1200 bytes, as one event loop (serial) and as several
// at once on one shared bucket (parallel; the server-wide cap). The clock is read per batch
// in both. x/time/rate needs a mutex per limiter and answers one size at a time: its
// "how many of the batch fit" takes TokensAt and then AllowN.
func BenchmarkTake(b *testing.B) {
	sizes := []int{1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200}
	start := time.Now()
	gcra := func(bk *Bucket, l *Limit) {
		_, _ = bk.Take(l, int64(time.Since(start)), sizes)
	}
	xrate := func(lim *rate.Limiter) {
		now := time.Now()
		tokens := lim.TokensAt(now)
		sum, n := 0, 0
		for n < len(sizes) && float64(sum+sizes[n]) <= tokens {
			sum += sizes[n]
			n++
		}
		if n > 0 {
			_ = lim.AllowN(now, sum)
		}
	}
	const bps = 1e12 // never limiting: the cost of the bookkeeping alone
	b.Run("gcra/serial", func(b *testing.B) {
		l, bk := NewLimit(bps, 1e9), &Bucket{}
		for b.Loop() {
			gcra(bk, &l)
		}
	})
	b.Run("xrate/serial", func(b *testing.B) {
		lim := rate.NewLimiter(bps, 1e9)
		for b.Loop() {
			xrate(lim)
		}
	})
	b.Run("gcra/parallel", func(b *testing.B) {
		l, bk := NewLimit(bps, 1e9), &Bucket{}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				gcra(bk, &l)
			}
		})
	})
	b.Run("xrate/parallel", func(b *testing.B) {
		lim := rate.NewLimiter(bps, 1e9)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				xrate(lim)
			}
		})
	})
}
