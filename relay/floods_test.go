package relay

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// pionCall is a pion/turn client relaying a steady stream through Ferry to an echo peer and
// back, counting what returns.
type pionCall struct {
	relay    net.PacketConn
	peer     net.Addr
	sent     atomic.Int64
	received atomic.Int64
	seen     sync.Map // sequence numbers back from the peer
}

func startPionCall(t *testing.T, env *testEnv, user string) *pionCall {
	t.Helper()
	echo := newUDPEcho(t, "127.0.0.2")
	cred := env.cred(t, user, time.Hour)
	base, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: env.udp.String(), TURNServerAddr: env.udp.String(),
		Conn: base, Username: cred.Username, Password: cred.Password, Realm: testRealm,
		LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { _ = relayConn.Close() })
	c := &pionCall{relay: relayConn, peer: net.UDPAddrFromAddrPort(echo.addr())}
	if err := client.CreatePermission(c.peer); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := relayConn.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 8 {
				if _, dup := c.seen.LoadOrStore(binary.BigEndian.Uint64(buf), true); !dup {
					c.received.Add(1)
				}
			}
		}
	}()
	return c
}

// stream sends packets of size bytes at pps for d, numbered, like a voice or video stream:
// packet i leaves at i/pps seconds (late ones at once, none skipped).
func (c *pionCall) stream(t *testing.T, pps int, size int, d time.Duration) {
	t.Helper()
	pkt := make([]byte, size)
	start, n := time.Now(), int(d.Seconds()*float64(pps))
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(pps))))
		binary.BigEndian.PutUint64(pkt, uint64(c.sent.Add(1)))
		if _, err := c.relay.WriteTo(pkt, c.peer); err != nil {
			t.Errorf("write: %v", err)
			return
		}
	}
}

// floodSource is one flooding address with its sockets, counting the answers it gets.
type floodSource struct {
	ip      string
	conns   []*net.UDPConn
	nonce   string
	answers atomic.Int64
	first   time.Time
	last    time.Time
}

// A 401 flood and a wrong-password flood from 100 loopback addresses (127.1.0.1-100), four
// source ports each, bounded in count (16,000 requests) and time (4 s), while a pion client
// relays a steady 250 packets per second through Ferry to a peer and back: under 0.1 % of the
// call's packets are lost, and no flooding address gets more answers than the configured
// pace allows (its burst plus its rate for the time it flooded), nor far fewer.
func TestFloodsDoNotDisturbACall(t *testing.T) {
	const rate, burst = 5, 10 // the floods send 40 a second from each address
	env := newTestEnv(t, func(c *Config) {
		c.UnauthRate, c.UnauthBurst = rate, burst
		c.Now = time.Now // the pace refills in real time here
		if _, err := SetSocketBuffers(c.UDP[0][0], 4<<20); err != nil {
			t.Fatal(err)
		}
	})
	call := startPionCall(t, env, "doctor")
	sources := make([]*floodSource, 100)
	for i := range sources {
		s := &floodSource{ip: fmt.Sprintf("127.1.0.%d", i+1)}
		for range 4 {
			conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(s.ip)}, env.udp)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			s.conns = append(s.conns, conn)
		}
		// The wrong-password flood needs a nonce for the address: one challenge.
		c := &stunClient{t: t, conn: s.conns[0]}
		r, err := c.transact(c.build(stun.MethodAllocate, udpTransport))
		if err != nil || errCode(r) != 401 {
			t.Fatalf("%s: challenge: %v %v", s.ip, r, err)
		}
		var n stun.Nonce
		if err := n.GetFrom(r); err != nil {
			t.Fatal(err)
		}
		s.nonce = n.String()
		_ = s.conns[0].SetReadDeadline(time.Time{})
		sources[i] = s
	}

	var readers sync.WaitGroup
	for _, s := range sources {
		for _, conn := range s.conns {
			readers.Go(func() {
				buf := make([]byte, 1500)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
					s.answers.Add(1)
				}
			})
		}
	}
	cred := env.cred(t, "mallory", time.Hour)
	wrongKey := auth.LongTermKey(cred.Username, testRealm, "not the password")
	var callDone sync.WaitGroup
	callDone.Go(func() { call.stream(t, 250, 200, 6*time.Second) })
	time.Sleep(time.Second) // the sources' buckets are full again (their challenge took one)

	// The floods: every 100 ms, each source sends one request from each of its ports,
	// alternately a bare Allocate (401) and one signed with a wrong password (401 after the
	// integrity check), 40 rounds. Built once: Ferry keeps no state for either.
	const rounds = 40
	var floods sync.WaitGroup
	for _, s := range sources {
		bare := mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport).Raw
		wrong := mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport,
			stun.NewUsername(cred.Username), stun.NewRealm(testRealm), stun.NewNonce(s.nonce), stun.MessageIntegrity(wrongKey)).Raw
		floods.Go(func() {
			s.first = time.Now()
			for r := range rounds {
				time.Sleep(time.Until(s.first.Add(time.Duration(r) * 100 * time.Millisecond)))
				for i, conn := range s.conns {
					req := bare
					if (r+i)%2 == 1 {
						req = wrong
					}
					_, _ = conn.Write(req)
				}
				s.last = time.Now()
			}
		})
	}
	floods.Wait()
	callDone.Wait()
	// The last answers and echoes: wait until no more arrive (on a busy machine the relay can
	// still be working through the floods' queue when they stop sending).
	for total, deadline := int64(-1), time.Now().Add(10*time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		n := call.received.Load()
		for _, s := range sources {
			n += s.answers.Load()
		}
		if n == total {
			break
		}
		total = n
	}
	for _, s := range sources {
		for _, conn := range s.conns {
			_ = conn.Close()
		}
	}
	readers.Wait()

	sent, received := call.sent.Load(), call.received.Load()
	t.Logf("call: %d packets sent, %d came back (%.3f %% lost)", sent, received, 100*float64(sent-received)/float64(sent))
	if sent < 1400 {
		t.Fatalf("the call sent only %d packets in 6 s at 250/s", sent)
	}
	if lost := sent - received; lost*1000 >= sent {
		t.Fatalf("the call lost %d of %d packets during the floods", lost, sent)
	}
	least, most := int64(1<<62), int64(0)
	for _, s := range sources {
		n := s.answers.Load()
		allowed := burst + int64(rate*s.last.Sub(s.first).Seconds()+1)
		if n > allowed {
			t.Errorf("%s got %d answers to %d requests in %s; the pace allows %d", s.ip, n, rounds*len(s.conns),
				s.last.Sub(s.first).Round(time.Millisecond), allowed)
		}
		least, most = min(least, n), max(most, n)
	}
	t.Logf("floods: %d requests from each of %d addresses, %d-%d answers each", rounds*4, len(sources), least, most)
	if least < burst {
		t.Errorf("an address got %d answers: fewer than its burst of %d", least, burst)
	}
	if d := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "rate_limited"); d < float64(len(sources)*(rounds*4-int(most))) {
		t.Errorf("%v answers dropped for the pace", d)
	}
	if f := env.metric(t, "ferry_turn_auth_failures_total", "reason", "bad_integrity"); f == 0 {
		t.Error("no wrong password reached the integrity check")
	}
}
