package relay

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// frameTap records which frame kinds reach the client socket, to prove that both the Data
// indication and the ChannelData paths were used.
type frameTap struct {
	net.PacketConn
	mu    sync.Mutex
	kinds map[string]int
}

func (f *frameTap) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := f.PacketConn.ReadFrom(p)
	if n >= 2 {
		f.mu.Lock()
		switch {
		case p[0]>>6 == 1:
			f.kinds["channeldata"]++
		case wire.Be16(p) == wire.TypeDataIndication:
			f.kinds["data_indication"]++
		}
		f.mu.Unlock()
	}
	return n, a, err
}

func (f *frameTap) WriteTo(p []byte, a net.Addr) (int, error) {
	if len(p) >= 2 {
		f.mu.Lock()
		switch {
		case p[0]>>6 == 1:
			f.kinds["out_channeldata"]++
		case wire.Be16(p) == wire.TypeSendIndication:
			f.kinds["out_send_indication"]++
		}
		f.mu.Unlock()
	}
	return f.PacketConn.WriteTo(p, a)
}

func (f *frameTap) count(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kinds[k]
}

// Conformance with pion's TURN client over UDP and TCP control connections: allocate, create
// a permission, relay to an echo peer and back through Send/Data indications and through a
// channel binding, and keep the allocation alive past its first lifetime with Refresh.
func TestConformancePionClient(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t, func(c *Config) { c.AllocationLifetime = 3 * time.Second })
			echo := newUDPEcho(t, "127.0.0.2")
			cred := env.cred(t, "u-conf", time.Hour)

			var base net.PacketConn
			var server string
			if network == "udp" {
				pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				base, server = pc, env.udp.String()
			} else {
				conn, err := net.Dial("tcp4", env.tcp.String())
				if err != nil {
					t.Fatal(err)
				}
				base, server = turn.NewSTUNConn(conn), env.tcp.String()
			}
			tap := &frameTap{PacketConn: base, kinds: map[string]int{}}
			client, err := turn.NewClient(&turn.ClientConfig{
				STUNServerAddr: server, TURNServerAddr: server, Conn: tap,
				Username: cred.Username, Password: cred.Password, Realm: testRealm,
				LoggerFactory: logging.NewDefaultLoggerFactory(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if err := client.Listen(); err != nil {
				t.Fatal(err)
			}
			mapped, err := client.SendBindingRequest()
			if err != nil {
				t.Fatalf("binding: %v", err)
			}
			if mapped.(*net.UDPAddr).IP.String() != "127.0.0.1" {
				t.Fatalf("mapped address %s", mapped)
			}
			relayConn, err := client.Allocate()
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			defer relayConn.Close()
			peerAddr := net.UDPAddrFromAddrPort(echo.addr())

			// Permission only, no channel yet: the peer's datagram must arrive as a Data
			// indication (RFC 8656 §11.3).
			if err := client.CreatePermission(peerAddr); err != nil {
				t.Fatalf("permission: %v", err)
			}
			if _, err := echo.conn.WriteTo([]byte("from peer"), relayConn.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 1500)
			n, from, err := relayConn.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "from peer" || from.String() != peerAddr.String() {
				t.Fatalf("peer-initiated data: %q from %v, %v", buf[:n], from, err)
			}
			if tap.count("data_indication") != 1 {
				t.Fatalf("want one Data indication, got %v", tap.kinds)
			}

			roundTrip := func(i int) {
				t.Helper()
				msg := []byte(fmt.Sprintf("packet %03d", i))
				if _, err := relayConn.WriteTo(msg, peerAddr); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
				buf := make([]byte, 1500)
				n, from, err := relayConn.ReadFrom(buf)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], msg) || from.String() != peerAddr.String() {
					t.Fatalf("got %q from %s, want %q from %s", buf[:n], from, msg, peerAddr)
				}
			}
			// pion sends the first packets as Send indications while it binds a channel,
			// then switches to ChannelData.
			for i := 0; i < 40; i++ {
				roundTrip(i)
				time.Sleep(25 * time.Millisecond)
			}
			if tap.count("out_send_indication") == 0 || tap.count("out_channeldata") == 0 ||
				tap.count("channeldata") == 0 {
				t.Fatalf("want both paths used, got %v", tap.kinds)
			}
			// The server grants 3 s lifetimes; pion refreshes at half-life. Past two
			// lifetimes the allocation must still relay.
			time.Sleep(6500 * time.Millisecond)
			roundTrip(99)
			if env.srv.AllocationCount() != 1 {
				t.Fatalf("allocations: %d", env.srv.AllocationCount())
			}
		})
	}
}
