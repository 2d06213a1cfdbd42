package relay

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// ListenUDP's SO_REUSEPORT group shares one port, refuses a port another socket holds
// (instead of silently splitting its traffic), and grants the buffers asked for.
func TestListenUDPReusePort(t *testing.T) {
	socks, err := ListenUDP(context.Background(), "udp4", "127.0.0.1:0", 4, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range socks {
			_ = s.Close()
		}
	}()
	if len(socks) != 4 {
		t.Fatalf("%d sockets", len(socks))
	}
	addr := socks[0].LocalAddr().String()
	for _, s := range socks[1:] {
		if s.LocalAddr().String() != addr {
			t.Fatalf("socket on %s, group on %s", s.LocalAddr(), addr)
		}
	}
	for _, n := range []int{1, 4} {
		again, err := ListenUDP(context.Background(), "udp4", addr, n, 0)
		if !errors.Is(err, syscall.EADDRINUSE) {
			for _, s := range again {
				_ = s.Close()
			}
			t.Fatalf("second group of %d on a taken port: %v", n, err)
		}
	}
	if got, err := SetSocketBuffers(socks[0], 128<<10); err != nil || got < 128<<10 {
		t.Fatalf("buffers: %d %v", got, err)
	}
}

// Clients spread over a listener's SO_REUSEPORT sockets by the kernel are all served: each
// allocates, binds a channel and gets its data back through its own socket.
func TestRelayOverReusePortSockets(t *testing.T) {
	socks, err := ListenUDP(context.Background(), "udp4", "127.0.0.1:0", 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	env := newTestEnv(t, func(c *Config) {
		for _, s := range c.UDP[0] {
			_ = s.Close()
		}
		c.UDP[0] = socks
	})
	echo := newUDPEcho(t, "127.0.0.2")
	p := peerAttr{ap: echo.addr()}
	for i := range 12 {
		c := env.dial(t, "udp")
		cred := env.cred(t, fmt.Sprintf("u-%d", i), time.Hour)
		if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
			t.Fatalf("client %d: allocate %d", i, code)
		}
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), p); code != 0 {
			t.Fatalf("client %d: ChannelBind %d", i, code)
		}
		payload := fmt.Appendf(nil, "client %d", i)
		c.send(c.channelData(0x4000, payload))
		c.expectData(0x4000, echo.addr(), payload)
	}
	if n := env.srv.AllocationCount(); n != 12 {
		t.Fatalf("%d allocations", n)
	}
}

// A burst of equal-sized packets, as a video frame's, arrives whole and in order both ways,
// with UDP GSO and with the sendmmsg fallback (relay.udp_gso: false).
func TestBurstArrivesInOrder(t *testing.T) {
	for _, noGSO := range []bool{false, true} {
		t.Run(fmt.Sprintf("noGSO=%t", noGSO), func(t *testing.T) {
			env := newTestEnv(t, func(c *Config) { c.NoGSO = noGSO })
			echo := newUDPEcho(t, "127.0.0.2")
			c, _ := env.allocated(t, "udp", "u-burst")
			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.addr()}); code != 0 {
				t.Fatalf("ChannelBind %d", code)
			}
			const n = 32
			payload := func(i int) []byte {
				p := make([]byte, 1000)
				copy(p, fmt.Sprintf("packet %02d", i))
				return p
			}
			for i := range n {
				c.send(c.channelData(0x4000, payload(i)))
			}
			for i := range n {
				c.expectData(0x4000, echo.addr(), payload(i))
			}
			if got := echo.n.Load(); got != n {
				t.Fatalf("peer got %d of %d", got, n)
			}
		})
	}
}
