package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// The basic TURN flow with exact bytes: Allocate, CreatePermission, Send indication out and
// Data indication back, ChannelBind, ChannelData both ways; over UDP and TCP control.
func TestRelayRoundTripRaw(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			echo := newUDPEcho(t, "127.0.0.2")
			c := env.dial(t, network)
			cred := env.cred(t, "u-0001", time.Hour)
			code, relayed := c.allocate(cred.Username, cred.Password)
			if code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			if relayed.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("relayed address %s", relayed)
			}
			p := peerAttr{ap: echo.addr()}
			if code, _ := c.do(stun.MethodCreatePermission, p); code != 0 {
				t.Fatalf("CreatePermission: %d", code)
			}
			c.send(c.sendIndication(p, []byte("hello via send")))
			c.expectData(0, echo.addr(), []byte("hello via send"))

			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), p); code != 0 {
				t.Fatalf("ChannelBind: %d", code)
			}
			payload := []byte("odd-length payload") // 18 bytes: padding matters on TCP
			c.send(c.channelData(0x4000, payload))
			c.expectData(0x4000, echo.addr(), payload)
			if got := echo.n.Load(); got != 2 {
				t.Fatalf("peer received %d datagrams, want 2", got)
			}
		})
	}
}
