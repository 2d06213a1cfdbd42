package relay

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// Each quota answers its code (486 for allocations per user and in total, 508 for relay
// ports, permissions and channel bindings), is counted by kind, and frees its slot when what
// held it ends: an allocation whose lifetime runs out, a permission or channel binding that
// expires, on the injected clock.
func TestQuotasFreeTheirSlot(t *testing.T) {
	quota := func(env *testEnv, kind string) float64 {
		return env.metric(t, "ferry_turn_quota_rejections_total", "kind", kind)
	}
	// expire moves the clock past the default lifetime (600 s) and sweeps; allocations that
	// asked for an hour stay.
	expire := func(env *testEnv) {
		env.clock.Add(DefaultAllocationLifetime + time.Second)
		env.srv.Sweep()
	}
	long := func(t *testing.T, c *stunClient) {
		if code, _ := c.do(stun.MethodRefresh, lifetime(3600)); code != 0 {
			t.Fatalf("refresh: %d", code)
		}
	}

	t.Run("allocations per user", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) { c.MaxAllocationsPerUser = 3 })
		first, _ := env.allocated(t, "udp", "alice")
		for range 2 {
			c, _ := env.allocated(t, "udp", "alice")
			long(t, c)
		}
		cred := env.cred(t, "alice", time.Hour)
		if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 486 {
			t.Fatalf("alice's 4th allocation, quota 3: %d, want 486", code)
		}
		if quota(env, "user") != 1 {
			t.Fatal("not counted as kind user")
		}
		bob, _ := env.allocated(t, "tcp", "bob") // another user allocates normally
		long(t, bob)
		expire(env) // alice's first allocation ends
		if code, _ := first.do(stun.MethodRefresh); code != 437 {
			t.Fatalf("the expired allocation answers %d, want 437", code)
		}
		waitFor(t, func() bool { return env.srv.AllocationCount() == 3 })
		if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 0 {
			t.Fatalf("alice after one of her allocations expired: %d", code)
		}
		if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 486 {
			t.Fatalf("and one more: %d, want 486", code)
		}
	})

	t.Run("allocations in total", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) { c.MaxAllocations = 2 })
		env.allocated(t, "udp", "u1")
		c, _ := env.allocated(t, "udp", "u2")
		long(t, c)
		cred := env.cred(t, "u3", time.Hour)
		if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 486 {
			t.Fatalf("a 3rd allocation, total quota 2: %d, want 486", code)
		}
		if quota(env, "total") != 1 {
			t.Fatal("not counted as kind total")
		}
		expire(env)
		waitFor(t, func() bool { return env.srv.AllocationCount() == 1 })
		if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 0 {
			t.Fatalf("after one expired: %d", code)
		}
	})

	t.Run("relay ports", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) { c.PortMin, c.PortMax = freePorts(t, 2) })
		env.allocated(t, "udp", "p1")
		c, _ := env.allocated(t, "udp", "p2")
		long(t, c)
		cred := env.cred(t, "p3", time.Hour)
		if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 508 {
			t.Fatalf("a 3rd allocation on 2 relay ports: %d, want 508", code)
		}
		if quota(env, "relay_ports") != 1 {
			t.Fatal("not counted as kind relay_ports")
		}
		expire(env)
		waitFor(t, func() bool { // the event loop lets go of the socket, then the port is free
			code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password)
			return code == 0
		})
	})

	t.Run("permissions", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) {
			c.MaxPermissions = 2
			c.AllowedPeers = append(c.AllowedPeers, netip.MustParsePrefix("127.0.1.0/24"))
		})
		c, _ := env.allocated(t, "udp", "perm")
		long(t, c)
		if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.1.1:5000"), peer("127.0.1.2:5000")); code != 0 {
			t.Fatalf("2 permissions: %d", code)
		}
		env.clock.Add(4 * time.Minute)
		if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.1.2:5000")); code != 0 { // refreshed: lives on
			t.Fatalf("refresh: %d", code)
		}
		if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.1.3:5000")); code != 508 {
			t.Fatalf("a 3rd peer: %d, want 508", code)
		}
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peer("127.0.1.3:5000")); code != 508 {
			t.Fatalf("a channel to a 3rd peer: %d, want 508", code)
		}
		if quota(env, "permissions") != 2 {
			t.Fatalf("counted as kind permissions: %v", quota(env, "permissions"))
		}
		env.clock.Add(time.Minute + time.Second) // 127.0.1.1's permission (300 s) expires
		env.srv.Sweep()
		if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.1.3:5000")); code != 0 {
			t.Fatalf("a 3rd peer after the first permission expired: %d", code)
		}
		if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.1.1:5000")); code != 508 {
			t.Fatalf("and the expired one again: %d, want 508", code)
		}
	})

	t.Run("channels", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) { c.MaxChannels = 2 })
		c, _ := env.allocated(t, "udp", "chan")
		long(t, c)
		for i := range 2 {
			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000+uint16(i)), peer("127.0.0.2:"+strconv.Itoa(5000+i))); code != 0 {
				t.Fatalf("channel %d: %d", i, code)
			}
		}
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4002), peer("127.0.0.2:5002")); code != 508 {
			t.Fatalf("a 3rd channel: %d, want 508", code)
		}
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4001), peer("127.0.0.2:5001")); code != 0 {
			t.Fatalf("refreshing a bound channel at the quota: %d", code)
		}
		if quota(env, "channels") != 1 {
			t.Fatal("not counted as kind channels")
		}
		env.clock.Add(8 * time.Minute)
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4001), peer("127.0.0.2:5001")); code != 0 {
			t.Fatalf("refresh: %d", code)
		}
		env.clock.Add(2*time.Minute + time.Second) // 0x4000 (600 s) expires, 0x4001 lives on
		env.srv.Sweep()
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4002), peer("127.0.0.2:5002")); code != 0 {
			t.Fatalf("a 3rd channel after the first expired: %d", code)
		}
	})
}

// An allocation flood from one user id stops at the per-user quota (the default, 8), over
// UDP and TCP at once from many client ports, while another user allocates normally.
func TestAllocationFloodStopsAtUserQuota(t *testing.T) {
	env := newTestEnv(t)
	cred := env.cred(t, "mallory", time.Hour)
	const attempts = 60
	results := make(chan int, attempts)
	for i := range attempts {
		network := "udp"
		if i%3 == 0 {
			network = "tcp"
		}
		c := env.dial(t, network)
		go func() {
			code, _ := c.allocate(cred.Username, cred.Password)
			results <- code
		}()
	}
	alice := env.dial(t, "udp")
	aliceCred := env.cred(t, "alice", time.Hour)
	if code, _ := alice.allocate(aliceCred.Username, aliceCred.Password); code != 0 {
		t.Fatalf("alice during mallory's flood: %d", code)
	}
	granted, refused := 0, 0
	for range attempts {
		switch code := <-results; code {
		case 0:
			granted++
		case 486:
			refused++
		default:
			t.Fatalf("an allocation of the flood got %d", code)
		}
	}
	if granted != DefaultMaxAllocationsPerUser || refused != attempts-DefaultMaxAllocationsPerUser {
		t.Fatalf("granted %d, refused %d of %d; quota %d", granted, refused, attempts, DefaultMaxAllocationsPerUser)
	}
	if got := env.metric(t, "ferry_turn_quota_rejections_total", "kind", "user"); got != float64(refused) {
		t.Fatalf("counted %v refusals", got)
	}
	if env.srv.AllocationCount() != DefaultMaxAllocationsPerUser+1 {
		t.Fatalf("%d allocations live", env.srv.AllocationCount())
	}
}

// SetLimits changes the quotas, caps and paces of a running server (a configuration reload):
// the next request obeys them, live allocations keep what they hold, the gauges follow, and
// invalid limits change nothing.
func TestSetLimitsWhileRunning(t *testing.T) {
	env := newTestEnv(t)
	first, _ := env.allocated(t, "udp", "carol")
	env.allocated(t, "udp", "carol")
	if err := env.srv.SetLimits(Limits{MaxAllocationsPerUser: 1, TotalBitrate: 5_000_000, MaxChannels: 2}); err != nil {
		t.Fatal(err)
	}
	cred := env.cred(t, "carol", time.Hour)
	if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 486 {
		t.Fatalf("carol's 3rd allocation after the quota went to 1: %d, want 486", code)
	}
	if code, _ := first.do(stun.MethodRefresh); code != 0 {
		t.Fatalf("a live allocation over the new quota: %d", code)
	}
	for kind, want := range map[string]float64{"per_user": 1, "channels": 2, "permissions": DefaultMaxPermissions} {
		if got := env.metric(t, "ferry_turn_allocation_limit", "kind", kind); got != want {
			t.Errorf("ferry_turn_allocation_limit{kind=%q} = %v, want %v", kind, got, want)
		}
	}
	if got := env.metric(t, "ferry_turn_bandwidth_limit_bits_per_second", "scope", "server"); got != 5e6 {
		t.Errorf("server bandwidth gauge %v", got)
	}
	if err := env.srv.SetLimits(Limits{AllocationBitrate: -1}); err == nil {
		t.Fatal("a negative cap was taken")
	}
	if got := env.metric(t, "ferry_turn_allocation_limit", "kind", "per_user"); got != 1 {
		t.Fatalf("invalid limits changed the quota: %v", got)
	}
	if err := env.srv.SetLimits(Limits{}); err != nil { // the defaults again
		t.Fatal(err)
	}
	if code, _ := env.dial(t, "udp").allocate(cred.Username, cred.Password); code != 0 {
		t.Fatalf("after the default quota came back: %d", code)
	}
}
