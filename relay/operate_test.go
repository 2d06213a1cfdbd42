package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// Draining refuses every new Allocate with 508 (on each transport) while the allocation that
// exists goes on: it relays, refreshes, takes permissions and channels; Binding is answered.
// Turning draining off takes allocations again.
func TestDrainRefusesNewAllocationsOnly(t *testing.T) {
	env := newTestEnv(t)
	echo := newUDPEcho(t, "127.0.0.2")
	c, _ := env.allocated(t, "udp", "u-live")
	p := peerAttr{ap: echo.addr()}
	if code, _ := c.do(stun.MethodCreatePermission, p); code != 0 {
		t.Fatal("permission before the drain")
	}

	env.srv.SetDraining(true)
	if !env.srv.Draining() {
		t.Fatal("Draining() false after SetDraining(true)")
	}
	for _, network := range transports {
		nc := env.dial(t, network)
		cred := env.cred(t, "u-new-"+network, time.Hour)
		if code, _ := nc.allocate(cred.Username, cred.Password); code != DrainCode {
			t.Fatalf("new Allocate over %s while draining: %d, want %d", network, code, DrainCode)
		}
	}
	if got := env.metric(t, "ferry_turn_requests_total", "method", "allocate", "result", "508"); got != 3 {
		t.Fatalf("refused Allocates counted %v, want 3", got)
	}

	if code, _ := c.do(stun.MethodRefresh, lifetime(600)); code != 0 {
		t.Fatalf("Refresh while draining: %d", code)
	}
	if code, _ := c.do(stun.MethodCreatePermission, p); code != 0 {
		t.Fatalf("CreatePermission while draining: %d", code)
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4001), p); code != 0 {
		t.Fatalf("ChannelBind while draining: %d", code)
	}
	c.send(c.channelData(0x4001, []byte("still relayed")))
	c.expectData(0x4001, echo.addr(), []byte("still relayed"))
	if code, _ := c.do(stun.MethodBinding); code != 0 {
		t.Fatalf("Binding while draining: %d", code)
	}
	if n := env.srv.AllocationCount(); n != 1 {
		t.Fatalf("%d allocations while draining, want the 1 that existed", n)
	}

	env.srv.SetDraining(false)
	if _, _ = env.allocated(t, "tcp", "u-after"); env.srv.AllocationCount() != 2 {
		t.Fatal("no allocation after the drain was called off")
	}
}

// A reloaded peer policy judges the next CreatePermission and ChannelBind, refreshes
// included; Ferry's own service ports stay unreachable.
func TestSetPeerPolicy(t *testing.T) {
	env := newTestEnv(t)
	c, _ := env.allocated(t, "udp", "u-pol")
	allowed := peer("127.0.0.2:4000")
	if code, _ := c.do(stun.MethodCreatePermission, allowed); code != 0 {
		t.Fatal("configured peer refused")
	}
	env.srv.SetPeerPolicy(nil, nil)
	if code, _ := c.do(stun.MethodCreatePermission, allowed); code != 403 {
		t.Fatalf("refresh of a permission the new policy denies: %d, want 403", code)
	}
	env.srv.SetPeerPolicy([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}, []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")})
	if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.0.5:4000")); code != 0 {
		t.Fatalf("newly allowed range: %d", code)
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peer("127.0.0.3:4000")); code != 403 {
		t.Fatalf("newly denied address: %d, want 403", code)
	}
	own := peerAttr{ap: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(env.udp.Port))}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4002), own); code != 403 {
		t.Fatalf("Ferry's own listener port after a reload: %d, want 403", code)
	}
}

// Reloaded quotas apply to the next Allocate and show in the limit gauges and Usage; live
// allocations stay.
func TestSetLimitsAndUsage(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.PortMin, c.PortMax = freePorts(t, 10) })
	env.allocated(t, "udp", "u-1")
	env.allocated(t, "tcp", "u-2")
	env.srv.SetLimits(Limits{MaxAllocations: 2})
	nc := env.dial(t, "udp")
	cred := env.cred(t, "u-3", time.Hour)
	if code, _ := nc.allocate(cred.Username, cred.Password); code != 486 {
		t.Fatalf("Allocate over the reloaded cap: %d, want 486", code)
	}
	if got := env.metric(t, "ferry_turn_allocation_limit", "kind", "total"); got != 2 {
		t.Fatalf("limit gauge %v, want 2", got)
	}
	u := env.srv.Usage()
	if u != (Usage{Allocations: 2, MaxAllocations: 2, RelayPorts: 2, RelayPortsTotal: 10}) {
		t.Fatalf("usage %+v", u)
	}
	env.srv.SetLimits(Limits{})
	if code, _ := nc.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatalf("Allocate after the cap was lifted: %d", code)
	}
	if u := env.srv.Usage(); u.Allocations != 3 || u.MaxAllocations != 0 || u.RelayPorts != 3 {
		t.Fatalf("usage %+v", u)
	}
}
