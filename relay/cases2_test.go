package relay

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/stun/v4"
)

// C26: over UDP a retransmitted request (its answer was lost) gets the same answer again,
// byte for byte: Allocate (the same relayed transport address, not 437), Refresh,
// CreatePermission and ChannelBind. A new Allocate on the 5-tuple gets 437.
func TestC26Retransmissions(t *testing.T) {
	env := newTestEnv(t)
	echo := newUDPEcho(t, "127.0.0.2")
	c := env.dial(t, "udp")
	cred := env.cred(t, "u-c26", time.Hour)
	if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatal("allocate")
	}
	retransmit := func(name string, m *stun.Message) {
		t.Helper()
		first, err := c.transact(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := c.transact(m) // byte-identical: same transaction id, same integrity
		if err != nil {
			t.Fatalf("%s again: %v", name, err)
		}
		if !bytes.Equal(first.Raw, again.Raw) {
			t.Errorf("%s: retransmission answered %v, first %v", name, again, first)
		}
		if errCode(first) != 0 {
			t.Errorf("%s: %d", name, errCode(first))
		}
	}
	// The authenticated Allocate above was c.last's request; send a copy of it again.
	alloc := c.build(stun.MethodAllocate, udpTransport)
	if r, _ := c.transact(alloc); errCode(r) != 437 {
		t.Fatalf("a new Allocate on the 5-tuple: %d, want 437", errCode(r))
	}
	c2 := env.dial(t, "udp")
	if code, _ := c2.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatal("allocate 2")
	}
	// Retransmit c2's authenticated Allocate byte for byte.
	r, err := c2.transact(rebuildAllocate(t, c2, c2.last.TransactionID))
	if err != nil || errCode(r) != 0 {
		t.Fatalf("retransmitted Allocate: %v %v, want the original success", r, err)
	}
	if !bytes.Equal(r.Raw, c2.last.Raw) {
		t.Errorf("retransmitted Allocate answered differently:\n%v\n%v", r, c2.last)
	}
	retransmit("Refresh", c.build(stun.MethodRefresh, lifetime(900)))
	retransmit("CreatePermission", c.build(stun.MethodCreatePermission, peerAttr{ap: echo.addr()}))
	retransmit("ChannelBind", c.build(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.addr()}))
	// A retransmitted delete finds no allocation: 437, which RFC 8656 §7.3 tells clients to
	// take as deleted.
	del := c.build(stun.MethodRefresh, lifetime(0))
	if r, _ := c.transact(del); errCode(r) != 0 {
		t.Fatal("delete")
	}
	if r, _ := c.transact(del); errCode(r) != 437 {
		t.Fatalf("retransmitted delete: %d, want 437", errCode(r))
	}
}

// rebuildAllocate builds c's authenticated Allocate again with transaction id: the same
// bytes the allocate helper sent.
func rebuildAllocate(t *testing.T, c *stunClient, id [stun.TransactionIDSize]byte) *stun.Message {
	t.Helper()
	out, err := stun.Build(stun.NewTransactionIDSetter(id), stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		udpTransport, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce), stun.MessageIntegrity(c.key))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// C27: stream framing near the 16-bit length limit. Over TCP and TLS a Binding written byte
// by byte is answered, two in one write are both answered, and a ChannelData frame of length
// 0xFFFC-0xFFFF whose payload hides a whole Binding request is consumed whole: the hidden
// request is never answered, and the connection and others keep working.
func TestC27StreamFraming(t *testing.T) {
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			c := env.dial(t, network)
			b1, b2 := binding(t), binding(t)
			for i := range b1.Raw {
				c.send(b1.Raw[i : i+1])
			}
			expectAnswer(t, c, b1.TransactionID)
			c.send(append(append([]byte(nil), b1.Raw...), b2.Raw...))
			expectAnswer(t, c, b1.TransactionID)
			expectAnswer(t, c, b2.TransactionID)
			for _, length := range []int{0xFFFC, 0xFFFD, 0xFFFE, 0xFFFF} {
				hidden := binding(t)
				frame := []byte{0x40, 0x00, byte(length >> 8), byte(length)}
				frame = append(frame, hidden.Raw...)
				frame = append(frame, make([]byte, 4+(length+3)&^3-len(frame))...)
				visible := binding(t)
				c.send(append(frame, visible.Raw...))
				for {
					r := expectAnswer(t, c, [stun.TransactionIDSize]byte{})
					if r.TransactionID == hidden.TransactionID {
						t.Fatalf("length %#x: the Binding hidden in a ChannelData payload was answered", length)
					}
					if r.TransactionID == visible.TransactionID {
						break
					}
				}
			}
			// The largest STUN message a header can describe (length 65532) is one frame too:
			// answered, and the connection goes on.
			big, err := stun.Build(stun.TransactionID, stun.BindingRequest,
				stun.RawAttribute{Type: 0x80FF, Value: make([]byte, 65532-4)}) // comprehension-optional
			if err != nil {
				t.Fatal(err)
			}
			c.send(big.Raw)
			expectAnswer(t, c, big.TransactionID)
			after := binding(t)
			c.send(after.Raw)
			expectAnswer(t, c, after.TransactionID)
			other := env.dial(t, network)
			b := binding(t)
			other.send(b.Raw)
			expectAnswer(t, other, b.TransactionID)
		})
	}
}

func binding(t *testing.T) *stun.Message {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expectAnswer reads the next STUN message and checks its transaction id (any, for a zero id).
func expectAnswer(t *testing.T, c *stunClient, id [stun.TransactionIDSize]byte) *stun.Message {
	t.Helper()
	for {
		b, err := c.recv(3 * time.Second)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if !stun.IsMessage(b) {
			continue
		}
		m := &stun.Message{Raw: b}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		if id != ([stun.TransactionIDSize]byte{}) && m.TransactionID != id {
			t.Fatalf("answer to %x, want %x", m.TransactionID, id)
		}
		return m
	}
}

// C29: another user's valid credentials on an existing allocation get 441 Wrong Credentials
// and change nothing, for Refresh (even LIFETIME 0), CreatePermission and ChannelBind; the
// owner's requests keep working; a wrong password gets 401.
func TestC29OtherUsersCredentials(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			echo := newUDPEcho(t, "127.0.0.2")
			c, _ := env.allocated(t, network, "u-a")
			owner := *c
			other := env.cred(t, "u-b", time.Hour)
			c.username, c.key = other.Username, auth.LongTermKey(other.Username, testRealm, other.Password)
			for _, step := range []struct {
				name  string
				m     stun.Method
				attrs []stun.Setter
			}{
				{"Refresh 0", stun.MethodRefresh, []stun.Setter{lifetime(0)}},
				{"CreatePermission", stun.MethodCreatePermission, []stun.Setter{peerAttr{ap: echo.addr()}}},
				{"ChannelBind", stun.MethodChannelBind, []stun.Setter{chanNum(0x4000), peerAttr{ap: echo.addr()}}},
			} {
				if code, _ := c.do(step.m, step.attrs...); code != 441 {
					t.Errorf("%s with user B's credentials: %d, want 441", step.name, code)
				}
			}
			if n := env.srv.AllocationCount(); n != 1 {
				t.Fatalf("allocations: %d", n)
			}
			if n := env.metric(t, "ferry_turn_permissions_active"); n != 0 {
				t.Fatalf("B installed %v permissions", n)
			}
			c.key = auth.LongTermKey(owner.username, testRealm, "wrong")
			c.username = owner.username
			if code, _ := c.do(stun.MethodRefresh); code != 401 {
				t.Fatalf("a wrong password: %d, want 401", code)
			}
			c.key = owner.key
			if code, _ := c.do(stun.MethodRefresh); code != 0 {
				t.Fatalf("the owner's Refresh: %d", code)
			}
		})
	}
}

// C30: channel bindings are unique both ways: a bound number cannot move to another peer, a
// bound peer cannot take a second number (400), and rebinding the same pair refreshes it. A
// ChannelBind with two XOR-PEER-ADDRESS attributes binds the first (data goes there only);
// a CreatePermission with two installs both.
func TestC30ChannelBindConflicts(t *testing.T) {
	env := newTestEnv(t)
	p, q := newUDPEcho(t, "127.0.0.2"), newUDPEcho(t, "127.0.0.2")
	c, _ := env.allocated(t, "udp", "u-c30")
	steps := []struct {
		num  uint16
		peer *udpEcho
		want int
	}{{0x4000, p, 0}, {0x4000, q, 400}, {0x4001, p, 400}, {0x4000, p, 0}}
	for _, s := range steps {
		if code, _ := c.do(stun.MethodChannelBind, chanNum(s.num), peerAttr{ap: s.peer.addr()}); code != s.want {
			t.Errorf("ChannelBind %#x: %d, want %d", s.num, code, s.want)
		}
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4002), peerAttr{ap: q.addr()}, peerAttr{ap: p.addr()}); code != 0 {
		t.Fatalf("ChannelBind with two peers: %d", code)
	}
	c.send(c.channelData(0x4002, []byte("to q")))
	c.expectData(0x4002, q.addr(), []byte("to q"))
	if n := p.n.Load(); n != 0 {
		t.Fatalf("the second XOR-PEER-ADDRESS of a ChannelBind got %d datagrams", n)
	}
	d := newUDPEcho(t, "127.0.0.2")
	c2, _ := env.allocated(t, "udp", "u-c30b")
	if code, _ := c2.do(stun.MethodCreatePermission, peerAttr{ap: d.addr()}, peer("127.0.0.2:9")); code != 0 {
		t.Fatalf("CreatePermission with two peers: %d", code)
	}
	c2.send(c2.sendIndication(peerAttr{ap: d.addr()}, []byte("x")))
	c2.expectData(0, d.addr(), []byte("x"))
}

// C31: losing the TCP/TLS connection deletes its allocation at once, for a normal close and
// a reset: the gauge drops within a second, the relay port is free again (a range of one
// port), and a new Allocate, from the same client port after a reset, succeeds.
func TestC31ConnectionLossEndsAllocation(t *testing.T) {
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t, func(c *Config) { c.PortMin, c.PortMax = freePorts(t, 1) })
			for _, reset := range []bool{false, true} {
				c, _ := env.allocated(t, network, "u-c31")
				if reset {
					rawConn(c.conn).SetLinger(0)
				}
				_ = c.conn.Close()
				deadline := time.Now().Add(time.Second)
				for env.metric(t, "ferry_turn_allocations_active", "transport", network) != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("reset=%v: the allocation outlived its connection by a second", reset)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			// After a reset the client port can be used again at once.
			local := env.dial(t, "tcp")
			port := local.conn.LocalAddr().(*net.TCPAddr).Port
			rawConn(local.conn).SetLinger(0)
			_ = local.conn.Close()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
			conn, err := d.Dial("tcp4", env.tcp.String())
			if err != nil {
				t.Skipf("the kernel kept the port: %v", err)
			}
			c := &stunClient{t: t, conn: conn, stream: true}
			t.Cleanup(func() { _ = conn.Close() })
			cred := env.cred(t, "u-c31", time.Hour)
			if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
				t.Fatalf("Allocate from the same client port: %d", code)
			}
		})
	}
}

// rawConn returns the TCP connection under c (a TLS connection's too).
func rawConn(c net.Conn) *net.TCPConn {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	return c.(*net.TCPConn)
}

// C35: a flood of unauthenticated Allocates (10,000 from 2,000 sockets on 200 loopback
// addresses) leaves no state behind: the heap grows by less than 2 MiB, no descriptor is
// held, and an authenticated Allocate succeeds right after.
func TestC35UnauthenticatedFloodNoState(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10,000-request flood")
	}
	env := newTestEnv(t, func(c *Config) {
		if _, err := SetSocketBuffers(c.UDP[0][0], 4<<20); err != nil {
			t.Fatal(err)
		}
	})
	base := heapAfterGC()
	fds := openFiles(t)
	var wg sync.WaitGroup
	for ip := range 200 {
		wg.Go(func() {
			for range 10 {
				laddr := &net.UDPAddr{IP: net.IPv4(127, 1, byte(ip/250), byte(1+ip%250))}
				c, err := net.DialUDP("udp4", laddr, env.udp)
				if err != nil {
					t.Error(err)
					return
				}
				for range 5 {
					m, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport)
					_, _ = c.Write(m.Raw)
				}
				_ = c.Close()
				time.Sleep(2 * time.Millisecond) // a flood the listener's buffer holds
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for env.metric(t, "ferry_turn_requests_total", "method", "allocate", "result", "401") < 9900 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := env.metric(t, "ferry_turn_requests_total", "method", "allocate", "result", "401"); got < 9900 {
		t.Fatalf("only %v of 10,000 challenged", got)
	}
	if grew := int64(heapAfterGC()) - int64(base); grew > 2<<20 {
		t.Errorf("the heap grew by %d bytes", grew)
	}
	if n := openFiles(t); n > fds {
		t.Errorf("open files %d -> %d", fds, n)
	}
	env.allocated(t, "udp", "u-after-flood")
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func openFiles(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// Relay to relay (C06) on one server, both clients on UDP, goes the short way (no datagram
// through the kernel), yet keeps every rule of the long way: the receiving allocation needs
// a permission for the sender's relayed address, channels frame as ChannelData, and the
// traffic is counted on both allocations, as their end events show.
func TestRelayToRelayRules(t *testing.T) {
	env := newTestEnv(t)
	a, ra := env.allocated(t, "udp", "doctor")
	b, rb := env.allocated(t, "udp", "patient")
	if code, _ := a.do(stun.MethodCreatePermission, peerAttr{ap: rb}); code != 0 {
		t.Fatal("A permission")
	}
	before := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "no_permission")
	a.send(a.sendIndication(peerAttr{ap: rb}, []byte("B has no permission for A yet")))
	b.expectNothing(200 * time.Millisecond)
	if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "no_permission") - before; got != 1 {
		t.Fatalf("no_permission drops: %v, want 1", got)
	}
	if code, _ := b.do(stun.MethodChannelBind, chanNum(0x4002), peerAttr{ap: ra}); code != 0 {
		t.Fatal("B ChannelBind")
	}
	for range 3 {
		a.send(a.sendIndication(peerAttr{ap: rb}, []byte("12345")))
		b.expectData(0x4002, ra, []byte("12345"))
	}
	b.send(b.channelData(0x4002, []byte("1234567")))
	a.expectData(0, rb, []byte("1234567"))
	for _, c := range []*stunClient{a, b} {
		if code, _ := c.do(stun.MethodRefresh, lifetime(0)); code != 0 {
			t.Fatal("delete")
		}
	}
	waitFor(t, func() bool { return len(env.sink.ended()) == 2 })
	totals := map[uint64]AllocationEnd{}
	for _, e := range env.sink.ended() {
		totals[e.PacketsToPeer*100+e.PacketsToClient] = e
	}
	// A sent 3 (15 bytes) and got 1 (7 bytes); B the other way round. The refused one
	// counts nowhere.
	if e, ok := totals[3*100+1]; !ok || e.BytesToPeer != 15 || e.BytesToClient != 7 {
		t.Errorf("A's totals: %+v", env.sink.ended())
	}
	if e, ok := totals[1*100+3]; !ok || e.BytesToPeer != 7 || e.BytesToClient != 15 {
		t.Errorf("B's totals: %+v", env.sink.ended())
	}
}
