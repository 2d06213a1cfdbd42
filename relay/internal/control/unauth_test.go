package control

import (
	"net/netip"
	"testing"
	"time"
)

// The pace of unauthenticated answers is per source: an IPv4 address (in any spelling), or an
// IPv6 /64; a burst, then the rate; no state or allocation per source; off when negative.
func TestUnauthPace(t *testing.T) {
	// Sources that hash into one slot share it (1 in 65,536 for two): take a seed under which
	// the test's sources do not.
	var u *unauthLimiter
	for u == nil || collide(u, "192.0.2.1", "192.0.2.2", "2001:db8:1:2::1", "2001:db8:1:3::1", "198.51.100.7") {
		u = newUnauthLimiter()
	}
	u.set(10, 5)
	now := time.Unix(1_800_000_000, 0)
	take := func(ip string, n int, at time.Time) int {
		got := 0
		for range n {
			if u.allow(netip.MustParseAddr(ip), at) {
				got++
			}
		}
		return got
	}
	if got := take("192.0.2.1", 20, now); got != 5 {
		t.Fatalf("a burst of 5: %d answers", got)
	}
	if got := take("::ffff:192.0.2.1", 1, now); got != 0 {
		t.Fatal("the IPv4-mapped spelling has a pace of its own")
	}
	if got := take("192.0.2.1", 20, now.Add(time.Second)); got != 5 {
		t.Fatalf("a second later at 10/s (burst 5): %d answers", got)
	}
	if got := take("192.0.2.2", 5, now); got != 5 {
		t.Fatal("another address is paced apart")
	}
	if got := take("2001:db8:1:2::1", 5, now) + take("2001:db8:1:2:ffff::9", 5, now); got != 5 {
		t.Fatalf("one /64: %d answers, want one burst of 5", got)
	}
	if got := take("2001:db8:1:3::1", 5, now); got != 5 {
		t.Fatal("another /64 is paced apart")
	}
	ip := netip.MustParseAddr("198.51.100.7")
	if n := testing.AllocsPerRun(1000, func() { u.allow(ip, now) }); n != 0 {
		t.Fatalf("%v allocations per answer paced", n)
	}
	u.set(-1, 0)
	if got := take("192.0.2.1", 100, now); got != 100 {
		t.Fatal("a negative rate still paces")
	}
}

func collide(u *unauthLimiter, ips ...string) bool {
	seen := map[uint32]bool{}
	for _, ip := range ips {
		s := u.slot(netip.MustParseAddr(ip))
		if seen[s] {
			return true
		}
		seen[s] = true
	}
	return false
}
