package alloc

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"golang.org/x/time/rate"
)

// monoClock replaces a table's monotonic clock for the caps.
func (f *fixture) monoClock() *int64 {
	var now int64 = int64(time.Hour)
	f.t.mono = func() int64 { return now }
	return &now
}

// newAllocation creates an allocation for user (on a client port of its own).
func (f *fixture) newAllocation(t testing.TB, user string, port uint16) *Allocation {
	t.Helper()
	client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	a, _, err := f.t.Create(Request{Key: Key{Transport: wire.UDP, Client: client, Server: addrOf(f.listener.Conn())},
		Username: "1:" + user, UserID: user, Client: Client{UDP: f.listener, Addr: client}, Family: 4, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func batch(n, size int) []int {
	lens := make([]int, n)
	for i := range lens {
		lens[i] = size
	}
	return lens
}

// Each cap holds on its own scope: an allocation's cap on it alone, a user's on all its
// allocations together, the server's on everyone; each direction has its own buckets; what a
// cap refuses is counted by its reason and not charged to the caps before it.
func TestCaps(t *testing.T) {
	f := newFixture(t)
	now := f.monoClock()
	const kbit = 1000
	// 800 kbit/s = 100,000 bytes/s; a 100 ms burst is below the 16 KiB floor.
	f.t.SetCaps(Caps{AllocationBitrate: 800 * kbit, Burst: 100 * time.Millisecond})
	a := f.newAllocation(t, "alice", 30001)
	b := f.newAllocation(t, "alice", 30002)
	if n := a.account(stats.ToPeer, batch(20, 1000)); n != 16 {
		t.Fatalf("a full 16 KiB bucket admitted %d of 20 packets of 1000 bytes", n)
	}
	if n := a.account(stats.ToClient, batch(4, 1000)); n != 4 {
		t.Fatal("the other direction has a bucket of its own")
	}
	if n := b.account(stats.ToPeer, batch(4, 1000)); n != 4 {
		t.Fatal("another allocation has a bucket of its own")
	}
	*now += int64(10 * time.Millisecond) // 1000 bytes refilled
	if n := a.account(stats.ToPeer, batch(3, 1000)); n != 1 {
		t.Fatalf("10 ms later: %d packets, want 1", n)
	}
	if got := testValue(t, f.reg, "ferry_turn_dropped_packets_total", "allocation_bandwidth"); got != 4+2 {
		t.Fatalf("allocation_bandwidth drops: %v", got)
	}
	if bytes, pkts := a.Traffic(stats.ToPeer); bytes != 17000 || pkts != 17 {
		t.Fatalf("counted %d bytes in %d packets: only what went may count", bytes, pkts)
	}

	// A user's cap spans its allocations; the allocation caps before it keep the bytes a
	// later cap refused.
	f.t.SetCaps(Caps{AllocationBitrate: 8000 * kbit, UserBitrate: 800 * kbit, Burst: 100 * time.Millisecond})
	*now += int64(time.Hour)
	if n := a.account(stats.ToPeer, batch(10, 1000)); n != 10 {
		t.Fatal(n)
	}
	if n := b.account(stats.ToPeer, batch(10, 1000)); n != 6 {
		t.Fatalf("alice's second allocation got %d packets of the 6000 bytes left to her", n)
	}
	if n := a.account(stats.ToPeer, batch(50, 1000)); n != 0 {
		t.Fatal("alice is over her cap")
	}
	if got := testValue(t, f.reg, "ferry_turn_dropped_packets_total", "user_bandwidth"); got != 4+50 {
		t.Fatalf("user_bandwidth drops: %v", got)
	}
	// a's own bucket (100 ms of 1 MB/s = 100,000 bytes) was charged only the 10,000 that
	// went, not the 50,000 the user's cap refused after it.
	f.t.SetCaps(Caps{AllocationBitrate: 8000 * kbit, Burst: 100 * time.Millisecond})
	if n := a.account(stats.ToPeer, batch(200, 1000)); n != 90 {
		t.Fatalf("refunds: a's bucket holds %d packets, want 90", n)
	}
	bob := f.newAllocation(t, "bob", 30003)
	if n := bob.account(stats.ToPeer, batch(4, 1000)); n != 4 {
		t.Fatal("bob shares no bucket with alice")
	}

	// The server's cap spans everyone.
	f.t.SetCaps(Caps{TotalBitrate: 800 * kbit, Burst: 100 * time.Millisecond})
	*now += int64(time.Hour)
	if n := a.account(stats.ToClient, batch(10, 1000)); n != 10 {
		t.Fatal(n)
	}
	if n := bob.account(stats.ToClient, batch(10, 1000)); n != 6 {
		t.Fatalf("bob got %d of what the server had left", n)
	}
	if n := bob.account(stats.ToPeer, batch(10, 1000)); n != 10 {
		t.Fatal("the server's cap has a bucket per direction")
	}
	if got := testValue(t, f.reg, "ferry_turn_dropped_packets_total", "server_bandwidth"); got != 4 {
		t.Fatalf("server_bandwidth drops: %v", got)
	}

	// No caps: everything goes, nothing is dropped.
	f.t.SetCaps(Caps{})
	if n := a.account(stats.ToPeer, batch(1000, 1000)); n != 1000 {
		t.Fatal("caps removed, yet packets dropped")
	}
}

// A user's bandwidth and quota state lives while the user has allocations, and goes with
// the last one: users who come and go leave nothing behind.
func TestUserStateGoesWithLastAllocation(t *testing.T) {
	f := newFixture(t)
	a := f.newAllocation(t, "carol", 30011)
	b := f.newAllocation(t, "carol", 30012)
	if a.user != b.user || a.user.n != 2 {
		t.Fatal("two allocations of one user do not share its state")
	}
	f.t.End(a, EndDeletedClient)
	f.t.End(b, EndDeletedClient)
	f.t.mu.Lock()
	n := len(f.t.perUser)
	f.t.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d users remembered after their allocations ended", n)
	}
	anon1, _, err := f.t.Create(Request{Key: Key{Transport: wire.UDP, Client: netip.MustParseAddrPort("127.0.0.1:30013")},
		Username: "1800000000", Client: Client{UDP: f.listener}, Family: 4, Lifetime: time.Hour, MaxPerUser: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.t.Create(Request{Key: Key{Transport: wire.UDP, Client: netip.MustParseAddrPort("127.0.0.1:30014")},
		Username: "1800000001", Client: Client{UDP: f.listener}, Family: 4, Lifetime: time.Hour, MaxPerUser: 1}); err != nil {
		t.Fatalf("two anonymous credentials share a quota: %v", err)
	}
	if _, _, err := f.t.Create(Request{Key: Key{Transport: wire.UDP, Client: netip.MustParseAddrPort("127.0.0.1:30015")},
		Username: "1800000000", Client: Client{UDP: f.listener}, Family: 4, Lifetime: time.Hour, MaxPerUser: 1}); err != ErrQuotaUser {
		t.Fatalf("one anonymous credential twice, quota 1: %v", err)
	}
	_ = anon1
}

// With every cap on, relaying a batch still allocates nothing.
func TestCappedDataPathAllocatesNothing(t *testing.T) {
	f := newFixture(t)
	f.t.SetCaps(Caps{AllocationBitrate: 1e12, UserBitrate: 1e12, TotalBitrate: 1e12, Burst: time.Second})
	a := f.allocate(t)
	go drain(f.sink)
	go drain(f.client)
	payload := make([]byte, 100)
	ob := f.t.NewOutbox()
	if n := testing.AllocsPerRun(200, func() {
		for range 8 {
			ob.ChannelData(a, 0x4000, payload)
		}
		ob.Flush()
	}); n != 0 {
		t.Errorf("client -> peer with caps: %v allocations per batch", n)
	}
	pr := newPeerReader(f.t)
	for i := range 4 {
		pr.in.Lens[i], pr.in.Addrs[i], pr.in.Trunc[i] = 100, addrOf(f.sink), false
	}
	if n := testing.AllocsPerRun(1000, func() { pr.deliver(a, 4) }); n != 0 {
		t.Errorf("peer -> client with caps: %v allocations per batch", n)
	}
	if _, p := a.Traffic(stats.ToPeer); p < 8*200 {
		t.Fatalf("relayed only %d packets", p)
	}
}

// BenchmarkAccount measures the data path's accounting call per batch of 8 packets of 1200
// bytes: without caps, with all three caps on Ferry's bucket (never limiting: the cost of the
// bookkeeping), and the same three caps on golang.org/x/time/rate, mirrored in the test.
// Serial is one event loop; parallel is every loop on one allocation's user and the server.
func BenchmarkAccount(b *testing.B) {
	lens := batch(8, 1200)
	f := newFixture(b)
	a := f.allocate(b)
	on := Caps{AllocationBitrate: 1e13, UserBitrate: 1e13, TotalBitrate: 1e13, Burst: time.Second}
	xr := newXrateCaps(1e13/8, 1e13/8)
	for _, mode := range []string{"serial", "parallel"} {
		run := func(b *testing.B, fn func()) {
			if mode == "serial" {
				for b.Loop() {
					fn()
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					fn()
				}
			})
		}
		b.Run("nocaps/"+mode, func(b *testing.B) {
			f.t.SetCaps(Caps{})
			run(b, func() { a.account(stats.ToPeer, lens) })
		})
		b.Run("ferry/"+mode, func(b *testing.B) {
			f.t.SetCaps(on)
			run(b, func() { a.account(stats.ToPeer, lens) })
		})
		b.Run("xrate/"+mode, func(b *testing.B) {
			f.t.SetCaps(Caps{})
			run(b, func() { xr.account(a, stats.ToPeer, lens) })
		})
	}
}

// xrateCaps is what the caps would look like on x/time/rate: a limiter per scope and
// direction, the longest prefix of the batch that fits at each (TokensAt, then AllowN), then
// the same counting. Refunds for what a later scope refuses are left out (x/time/rate has no
// call for them, and the benchmark never limits), which only flatters x/time/rate.
type xrateCaps struct {
	lims [numCaps][2]*rate.Limiter
}

func newXrateCaps(bytesPerSec, depth float64) *xrateCaps {
	x := &xrateCaps{}
	for i := range x.lims {
		for d := range x.lims[i] {
			x.lims[i][d] = rate.NewLimiter(rate.Limit(bytesPerSec), int(depth))
		}
	}
	return x
}

func (x *xrateCaps) account(a *Allocation, dir int, lens []int) int {
	now := time.Now()
	n := len(lens)
	for lvl := range numCaps {
		lim := x.lims[lvl][dir]
		tokens := lim.TokensAt(now)
		sum, k := 0, 0
		for k < n && float64(sum+lens[k]) <= tokens {
			sum += lens[k]
			k++
		}
		if k > 0 && !lim.AllowN(now, sum) {
			k = 0
		}
		if n = k; n == 0 {
			return 0
		}
	}
	a.count(dir, lens[:n])
	return n
}
