package relay

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
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

// An allocation ends when the client deletes it (Refresh with LIFETIME 0) or when its TCP
// connection closes; the end event says which and carries the traffic totals.
func TestAllocationEndReasons(t *testing.T) {
	env := newTestEnv(t)
	echo := newUDPEcho(t, "127.0.0.2")

	c, _ := env.allocated(t, "udp", "u-end")
	if code, _ := c.do(stun.MethodCreatePermission, peerAttr{ap: echo.addr()}); code != 0 {
		t.Fatal("permission")
	}
	c.send(c.sendIndication(peerAttr{ap: echo.addr()}, []byte("12345")))
	c.expectData(0, echo.addr(), []byte("12345"))
	if code, _ := c.do(stun.MethodRefresh, lifetime(0)); code != 0 {
		t.Fatalf("Refresh 0: %d", code)
	}
	waitFor(t, func() bool { return len(env.sink.ended()) == 1 })
	e := env.sink.ended()[0]
	if e.Reason != EndDeletedClient || e.BytesToPeer != 5 || e.PacketsToPeer != 1 ||
		e.BytesToClient != 5 || e.PacketsToClient != 1 {
		t.Fatalf("end event %+v", e)
	}

	tc, _ := env.allocated(t, "tcp", "u-end-tcp")
	_ = tc.conn.Close()
	waitFor(t, func() bool { return len(env.sink.ended()) == 2 })
	if e := env.sink.ended()[1]; e.Reason != EndConnClosed {
		t.Fatalf("TCP close: %+v", e)
	}
	if n := env.srv.AllocationCount(); n != 0 {
		t.Fatalf("allocations left: %d", n)
	}
}

// A New that fails leaves nothing registered on the caller's registry, so the caller can
// fix the configuration and try again with the same registry.
func TestFailedNewRegistersNothing(t *testing.T) {
	env := newTestEnv(t)
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Realm: testRealm, Auth: env.auth, UDP: [][]*net.UDPConn{{}},
		RelayIPv4: netip.MustParseAddr("127.0.0.1"), Registerer: reg}); err == nil {
		t.Fatal("New with an empty UDP socket group succeeded")
	}
	closed, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = closed.Close() // fails once the metrics are registered: when the listeners start
	_, err = New(Config{Realm: testRealm, Auth: env.auth, UDP: [][]*net.UDPConn{{closed}},
		RelayIPv4: netip.MustParseAddr("127.0.0.1"), Registerer: reg})
	if err == nil || !strings.Contains(err.Error(), "UDP listener") {
		t.Fatalf("New with a closed socket: %v, want a listener error", err)
	}
	if fams, _ := reg.Gather(); len(fams) != 0 {
		t.Fatalf("a failed New left %d metric families registered", len(fams))
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Realm: testRealm, Auth: env.auth, UDP: [][]*net.UDPConn{{uc}},
		RelayIPv4: netip.MustParseAddr("127.0.0.1"), Registerer: reg})
	if err != nil {
		t.Fatalf("New on the same registry after a failure: %v", err)
	}
	_ = srv.Close()
}
