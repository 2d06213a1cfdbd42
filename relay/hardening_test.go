package relay

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// dialFrom opens a TCP connection to addr from source IP src.
func dialFrom(t *testing.T, src string, addr net.Addr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedSoon reports whether the server closes c within d.
func closedSoon(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || (err != nil && !isTimeout(err))
}

// Silent connections from one address cannot take every TLS handshake slot: beyond the
// per-source cap they are closed at once, and a client from elsewhere still gets TLS. Close
// does not wait for pending handshakes.
func TestSilentConnectionsCannotStarveTLS(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.MaxConnectionsPerIP = 8 })
	for range 8 {
		dialFrom(t, "127.0.0.12", env.tls)
	}
	over := dialFrom(t, "127.0.0.12", env.tls)
	if !closedSoon(over, time.Second) {
		t.Fatal("the 9th connection from one address was not refused")
	}
	if got := env.metric(t, "ferry_turn_connections_refused_total", "reason", "per_ip"); got != 1 {
		t.Fatalf("refusals counted: %v", got)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.13")}}
	tc, err := tls.DialWithDialer(d, "tcp4", env.tls.String(), &tls.Config{RootCAs: env.roots, ServerName: "turn.ferry.test"})
	if err != nil {
		t.Fatalf("a TLS client from another address was shut out: %v", err)
	}
	tc.Close()
	start := time.Now()
	if err := env.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close waited %s for pending handshakes", d)
	}
}

// A connection without an allocation lives IdleTimeout from its start however slowly it
// trickles bytes; one whose allocation ended gets IdleTimeout from then.
func TestSlowConnectionsAreClosed(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.IdleTimeout = time.Second })
	slow := dialFrom(t, "127.0.0.14", env.tcp)
	start := time.Now()
	header := stunHeader(0x0001, 100) // promises 100 bytes, delivers one at a time
	slow.Write(header)
	closed := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := slow.Read(buf); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	for range 20 {
		select {
		case d := <-closed:
			if d > 3*time.Second {
				t.Fatalf("closed after %s", d)
			}
			goto expiry
		case <-time.After(200 * time.Millisecond):
			slow.Write([]byte{0})
		}
	}
	t.Fatal("a trickling connection outlived the idle timeout")

expiry:
	c, _ := env.allocated(t, "tcp", "u-expiry")
	if code, _ := c.do(stun.MethodRefresh, lifetime(1)); code != 0 {
		t.Fatalf("short refresh: %d", code)
	}
	env.clock.Add(DefaultAllocationLifetime + time.Second) // LIFETIME 1 gets the 600 s minimum
	env.srv.Sweep()
	waitFor(t, func() bool { return env.srv.AllocationCount() == 0 })
	if !closedSoon(c.conn, 3*time.Second) {
		t.Fatal("a connection whose allocation expired was kept open")
	}
}

// Permissions and channels per allocation are capped (508), so one credential cannot make
// the server track (and copy) thousands of peers.
func TestPermissionCap(t *testing.T) {
	env := newTestEnv(t, func(c *Config) {
		c.MaxPermissions = 4
		c.AllowedPeers = append(c.AllowedPeers, netip.MustParsePrefix("127.0.1.0/24"))
	})
	c, _ := env.allocated(t, "udp", "u-cap")
	var peers []stun.Setter
	for i := 1; i <= 4; i++ {
		peers = append(peers, peer("127.0.1."+strconv.Itoa(i)+":5000"))
	}
	if code, _ := c.do(stun.MethodCreatePermission, peers...); code != 0 {
		t.Fatalf("4 permissions: %d", code)
	}
	if code, _ := c.do(stun.MethodCreatePermission, peers...); code != 0 {
		t.Fatalf("refreshing 4 permissions: %d", code)
	}
	if code, _ := c.do(stun.MethodCreatePermission, peer("127.0.1.5:5000")); code != 508 {
		t.Fatalf("a 5th permission: %d, want 508", code)
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peer("127.0.1.6:5000")); code != 508 {
		t.Fatalf("a channel to a 5th peer: %d, want 508", code)
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peer("127.0.1.1:5000")); code != 0 {
		t.Fatalf("a channel to a permitted peer: %d", code)
	}
}

// The unauthenticated-answer limit applies to UDP only: spoofed UDP from a victim's address
// must not take away its TCP fallback.
func TestUnauthLimitIsUDPOnly(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.UnauthRate, c.UnauthBurst = 1, 1 })
	u := dialClient(t, "udp", env.udp, "127.0.0.15:0")
	for range 20 {
		u.send(mustBuild(t, stun.TransactionID, stun.BindingRequest).Raw)
	}
	c := &stunClient{t: t, conn: dialFrom(t, "127.0.0.15", env.tcp), stream: true}
	r, err := c.transact(c.build(stun.MethodAllocate, udpTransport))
	if err != nil || errCode(r) != 401 {
		t.Fatalf("TCP challenge from a UDP-limited address: %v %v", r, err)
	}
}

// Concurrent Allocates cannot slip past a per-user quota.
func TestQuotaUnderConcurrency(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.MaxAllocationsPerUser = 2 })
	cred := env.cred(t, "racer", time.Hour)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		c := env.dial(t, "tcp")
		wg.Go(func() {
			if code, _ := c.allocate(cred.Username, cred.Password); code == 0 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if n := ok.Load(); n != 2 {
		t.Fatalf("%d allocations granted, quota 2", n)
	}
}

// Requests on no allocation get 437; an undecodable peer address gets 400, never 401.
func TestMismatchAndBadPeerAddress(t *testing.T) {
	env := newTestEnv(t)
	c, _ := env.allocated(t, "udp", "u-437")
	if code, _ := c.do(stun.MethodRefresh, lifetime(0)); code != 0 {
		t.Fatal("delete")
	}
	for _, m := range []stun.Method{stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind} {
		if code, _ := c.do(m, chanNum(0x4000), peer("127.0.0.2:5000")); code != 437 {
			t.Errorf("%s without allocation: %d, want 437", m, code)
		}
	}
	c2, _ := env.allocated(t, "udp", "u-400")
	short := stun.RawAttribute{Type: stun.AttrXORPeerAddress, Value: []byte{0, 1, 2, 3, 4, 5, 6}}
	if code, _ := c2.do(stun.MethodChannelBind, chanNum(0x4000), short); code != 400 {
		t.Fatalf("truncated XOR-PEER-ADDRESS: %d, want 400", code)
	}
}

// RFC 6062: two TCP allocations never share a relay port; a rejected ConnectionBind does not
// switch off Ferry's inspection; a bound data connection carries bytes both ways for longer
// than the idle timeout.
func TestTCPAllocations(t *testing.T) {
	env := newTestEnv(t, func(c *Config) {
		c.TCPAllocations = true
		c.PortMin, c.PortMax = freePorts(t, 2)
		c.IdleTimeout = time.Second
	})
	peerLn, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peerLn.Close()
	go func() {
		for {
			pc, err := peerLn.Accept()
			if err != nil {
				return
			}
			go io.Copy(pc, pc) // an echo peer
		}
	}()
	tcpTransport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{6, 0, 0, 0}}
	var relays []netip.AddrPort
	var ctrl *stunClient
	for i := range 3 {
		c := env.dial(t, "tcp")
		cred := env.cred(t, "tcp-"+strconv.Itoa(i), time.Hour)
		code, r := c.allocate(cred.Username, cred.Password, tcpTransport)
		if i < 2 {
			if code != 0 {
				t.Fatalf("TCP allocation %d: %d", i, code)
			}
			relays = append(relays, r)
			ctrl = c
		} else if code != 508 {
			t.Fatalf("a third TCP allocation on two ports: %d, want 508", code)
		}
	}
	if relays[0] == relays[1] {
		t.Fatalf("two TCP allocations share %s", relays[0])
	}

	// A ConnectionBind pion rejects (no credentials) leaves the connection inspected.
	probe := env.dial(t, "tcp")
	r, err := probe.transact(probe.build(stun.MethodConnectionBind,
		stun.RawAttribute{Type: stun.AttrConnectionID, Value: []byte{0, 0, 0, 1}}))
	if err != nil || errCode(r) != 401 {
		t.Fatalf("unauthenticated ConnectionBind: %v %v", r, err)
	}
	cred := env.cred(t, "probe", time.Hour)
	if code, _ := probe.allocate(cred.Username, cred.Password); code != 0 {
		t.Fatalf("allocate after the rejected bind: %d", code)
	}
	if code, _ := probe.do(stun.MethodChannelBind, chanNum(0x6000), peer("127.0.0.2:5000")); code != 400 {
		t.Fatalf("legacy channel after a rejected ConnectionBind: %d, want 400 (inspection off?)", code)
	}

	// Connect, ConnectionBind on a new connection, then raw bytes beyond the idle timeout.
	peerAddr := peerLn.Addr().(*net.TCPAddr).AddrPort()
	code, resp := ctrl.do(stun.MethodConnect, peerAttr{ap: peerAddr})
	if code != 0 {
		t.Fatalf("Connect: %d", code)
	}
	cid, err := resp.Get(stun.AttrConnectionID)
	if err != nil {
		t.Fatal(err)
	}
	data := env.dial(t, "tcp")
	data.username, data.realm, data.key, data.nonce = ctrl.username, ctrl.realm, ctrl.key, ctrl.nonce
	if code, _ := data.do(stun.MethodConnectionBind, stun.RawAttribute{Type: stun.AttrConnectionID, Value: cid}); code != 0 {
		t.Fatalf("ConnectionBind: %d", code)
	}
	buf := make([]byte, 5)
	for _, wait := range []time.Duration{0, 1500 * time.Millisecond} {
		time.Sleep(wait)
		if _, err := data.conn.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		data.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(data.conn, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("raw data after %s: %q %v", wait, buf, err)
		}
	}
}

// A flood of Allocates with a wrong password from one address (valid nonce and realm, so
// only the integrity check can refuse them) gets a bounded number of 401s, stays out of
// pion's control queue, and leaves other clients able to allocate at once.
func TestWrongPasswordFloodIsBounded(t *testing.T) {
	env := newTestEnv(t, func(c *Config) {
		c.UnauthRate, c.UnauthBurst = 20, 40
		if _, err := SetSocketBuffers(c.UDP[0][0], 4<<20); err != nil { // the flood must reach Ferry
			t.Fatal(err)
		}
	})
	flooder := dialClient(t, "udp", env.udp, "127.0.0.5:0")
	cred := env.cred(t, "u-flood", time.Hour)
	if code, _ := flooder.allocate(cred.Username, "not the password"); code != 401 {
		t.Fatalf("wrong password: %d, want 401", code)
	}
	const n = 3000
	for range n {
		flooder.send(flooder.build(stun.MethodAllocate, udpTransport).Raw)
	}
	answers := 0
	for {
		if _, err := flooder.recv(300 * time.Millisecond); err != nil {
			break
		}
		answers++
	}
	// The bucket holds 40 and refills 20/s; the flood and the drain take well under 2 s.
	if answers > 40+2*20+10 {
		t.Fatalf("%d answers to %d wrong-password Allocates", answers, n)
	}
	if d := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "rate_limited"); d < n/2 {
		t.Fatalf("%v dropped as rate limited", d)
	}
	legit := dialClient(t, "udp", env.udp, "127.0.0.6:0")
	good := env.cred(t, "u-legit", time.Hour)
	if code, _ := legit.allocate(good.Username, good.Password); code != 0 {
		t.Fatalf("a legitimate Allocate after the flood: %d", code)
	}
}
