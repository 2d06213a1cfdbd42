package relay

import (
	"testing"

	"github.com/pion/stun/v4"
)

// A datagram may be empty: a client's empty ChannelData or Send, and a peer's empty datagram,
// are relayed as empty datagrams, over UDP and TCP alike, and the server goes on relaying.
// (An empty payload once crashed the process in the batch writer.)
func TestEmptyDatagramsAreRelayed(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			echo := newUDPEcho(t, "127.0.0.2")
			c, _ := env.allocated(t, network, "u-empty")
			p := peerAttr{ap: echo.addr()}
			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4001), p); code != 0 {
				t.Fatalf("ChannelBind: %d", code)
			}
			for i := range 3 {
				c.send(c.channelData(0x4001, nil))
				c.expectData(0x4001, echo.addr(), []byte{}) // the peer got it and echoed it, empty
				c.send(c.sendIndication(p, nil))
				c.expectData(0x4001, echo.addr(), []byte{})
				if got := echo.n.Load(); got != int64(2*(i+1)) {
					t.Fatalf("the peer received %d datagrams, want %d", got, 2*(i+1))
				}
			}
			c.send(c.channelData(0x4001, []byte("still relaying")))
			c.expectData(0x4001, echo.addr(), []byte("still relaying"))
			other, _ := env.allocated(t, network, "u-other")
			if code, _ := other.do(stun.MethodRefresh, lifetime(600)); code != 0 {
				t.Fatalf("another client's Refresh after empty datagrams: %d", code)
			}
		})
	}
}
