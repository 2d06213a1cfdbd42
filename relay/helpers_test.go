package relay

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/internal/portmux"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	testRealm  = "ferry"
	testSecret = "test-secret"
)

// fakeClock is the injected clock for credential expiry and allocation age.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testEnv is a Ferry relay on loopback: UDP and TCP listeners on 127.0.0.1 with ephemeral
// ports, relayed addresses on 127.0.0.1, and 127.0.0.2 allowed as the test's peer.
type testEnv struct {
	srv   *Server
	udp   *net.UDPAddr
	tcp   *net.TCPAddr
	tls   *net.TCPAddr
	udp6  *net.UDPAddr // with withIPv6
	roots *x509.CertPool
	auth  *auth.Authenticator
	clock *fakeClock
	reg   *prometheus.Registry
	sink  *recordingSink
}

var peerIP = netip.MustParseAddr("127.0.0.2")

func newTestEnv(t testing.TB, mutate ...func(*Config)) *testEnv {
	t.Helper()
	env := &testEnv{clock: newClock(), reg: prometheus.NewRegistry(), sink: &recordingSink{}}
	a, err := auth.New(auth.Config{Secrets: []string{testSecret}, MaxTTL: 24 * time.Hour,
		ClockSkew: 5 * time.Minute, Now: env.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	env.auth = a
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, roots := testTLSConfig(t)
	env.roots = roots
	cfg := Config{
		Realm:        testRealm,
		TLS:          []net.Listener{tls.NewListener(tlsLn, portmux.TLSConfig(serverTLS, false))},
		Auth:         a,
		UDP:          [][]*net.UDPConn{{uc}},
		TCP:          []net.Listener{tl},
		RelayIPv4:    netip.MustParseAddr("127.0.0.1"),
		AllowedPeers: []netip.Prefix{netip.PrefixFrom(peerIP, 32)},
		Now:          env.clock.Now,
		Registerer:   env.reg,
		Events:       env.sink,
		Limits:       Limits{UnauthRate: -1}, // tests share one source address
	}
	for _, f := range mutate {
		f(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	env.srv = srv
	env.udp = cfg.UDP[0][0].LocalAddr().(*net.UDPAddr)
	env.tcp = tl.Addr().(*net.TCPAddr)
	env.tls = cfg.TLS[0].Addr().(*net.TCPAddr)
	if len(cfg.UDP) > 1 {
		env.udp6 = cfg.UDP[1][0].LocalAddr().(*net.UDPAddr)
	}
	return env
}

// metric returns the value of the metric name with the given label pairs ("reason",
// "rate_limited", ...), 0 when it has no such series.
func (e *testEnv) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

// withRelayIP puts relayed transport addresses on ip, apart from the listeners on 127.0.0.1,
// as on a real server whose relay IP is not the loopback address its admin ports use.
func withRelayIP(ip string) func(*Config) {
	return func(c *Config) { c.RelayIPv4 = netip.MustParseAddr(ip) }
}

// withIPv6 adds a UDP listener on [::1] and IPv6 relayed addresses on ::1.
func withIPv6(t testing.TB) func(*Config) {
	return func(c *Config) {
		u6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Fatal(err)
		}
		c.UDP = append(c.UDP, []*net.UDPConn{u6})
		c.RelayIPv6 = netip.MustParseAddr("::1")
	}
}

func requestedFamily(f byte) stun.RawAttribute {
	return stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{f, 0, 0, 0}}
}

func (e *testEnv) cred(t testing.TB, user string, ttl time.Duration) auth.Credential {
	t.Helper()
	c, err := e.auth.Issue(user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recordingSink records allocation events.
type recordingSink struct {
	mu     sync.Mutex
	starts []AllocationStart
	perms  []netip.Addr
	ends   []AllocationEnd
}

func (r *recordingSink) AllocationStarted(s AllocationStart) {
	r.mu.Lock()
	r.starts = append(r.starts, s)
	r.mu.Unlock()
}

func (r *recordingSink) PermissionCreated(_ uint64, p netip.Addr, _ time.Time) {
	r.mu.Lock()
	r.perms = append(r.perms, p)
	r.mu.Unlock()
}

func (r *recordingSink) AllocationEnded(e AllocationEnd) {
	r.mu.Lock()
	r.ends = append(r.ends, e)
	r.mu.Unlock()
}

func (r *recordingSink) ended() []AllocationEnd {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]AllocationEnd(nil), r.ends...)
}

// udpEcho is a peer on addr that echoes every datagram. It counts what it received.
type udpEcho struct {
	conn *net.UDPConn
	n    atomic.Int64
}

func newUDPEcho(t testing.TB, ip string) *udpEcho {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEcho{conn: c}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.n.Add(1)
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return e
}

func (e *udpEcho) addr() netip.AddrPort { return e.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// canary listens on UDP and TCP at the same address; nothing may ever reach it.
type canary struct {
	udp  *net.UDPConn
	tcp  net.Listener
	hits atomic.Int64
}

func newCanary(t testing.TB, ip string) *canary {
	t.Helper()
	var u *net.UDPConn
	var tl net.Listener
	for try := 0; tl == nil; try++ { // the UDP port's TCP twin may be taken: try another
		var err error
		if u, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)}); err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		if tl, err = net.Listen("tcp4", net.JoinHostPort(ip, strconv.Itoa(port))); err != nil {
			_ = u.Close()
			if try == 20 {
				t.Fatal(err)
			}
		}
	}
	c := &canary{udp: u, tcp: tl}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := u.ReadFrom(buf); err != nil {
				return
			}
			c.hits.Add(1)
		}
	})
	wg.Go(func() {
		for {
			conn, err := tl.Accept()
			if err != nil {
				return
			}
			c.hits.Add(1)
			_ = conn.Close()
		}
	})
	t.Cleanup(func() {
		_ = u.Close()
		_ = tl.Close()
		wg.Wait()
		if n := c.hits.Load(); n != 0 {
			t.Errorf("canary at %s received %d packets or connections", ip, n)
		}
	})
	return c
}

func (c *canary) port() uint16 { return uint16(c.udp.LocalAddr().(*net.UDPAddr).Port) }

// stunClient speaks raw STUN/TURN to Ferry over UDP or TCP, so tests control every byte and
// see every error code (pion's client hides them and retries).
type stunClient struct {
	t        testing.TB
	conn     net.Conn
	stream   bool
	rbuf     []byte
	username string
	realm    string
	nonce    string
	key      []byte
	fp       bool          // add FINGERPRINT to requests
	last     *stun.Message // the last response do received
}

func dialClient(t testing.TB, network string, addr net.Addr, local string) *stunClient {
	t.Helper()
	var conn net.Conn
	var err error
	switch network {
	case "udp":
		var laddr *net.UDPAddr
		if local != "" {
			laddr, _ = net.ResolveUDPAddr("udp", local)
		}
		conn, err = net.DialUDP("udp", laddr, addr.(*net.UDPAddr))
	case "tcp":
		conn, err = net.DialTCP("tcp4", nil, addr.(*net.TCPAddr))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &stunClient{t: t, conn: conn, stream: network == "tcp"}
}

func (e *testEnv) dial(t testing.TB, network string) *stunClient {
	t.Helper()
	switch network {
	case "udp":
		return dialClient(t, "udp", e.udp, "")
	case "tcp":
		return dialClient(t, "tcp", e.tcp, "")
	}
	conn, err := tls.Dial("tcp4", e.tls.String(), &tls.Config{RootCAs: e.roots, ServerName: "turn.ferry.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &stunClient{t: t, conn: conn, stream: true}
}

// testTLSConfig returns a server config with a fresh self-signed certificate for
// turn.ferry.test and the pool that trusts it.
func testTLSConfig(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "turn.ferry.test"},
		DNSNames:     []string{"turn.ferry.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion: tls.VersionTLS12}, pool
}

func (c *stunClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// recv returns the next STUN message or ChannelData frame (padding stripped), or an error
// after timeout.
func (c *stunClient) recv(timeout time.Duration) ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	if !c.stream {
		buf := make([]byte, 65536)
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	for {
		kind, size, plen := wire.NextFrame(c.rbuf, true)
		switch kind {
		case wire.FrameSTUN:
			f := append([]byte(nil), c.rbuf[:size]...)
			c.rbuf = c.rbuf[size:]
			return f, nil
		case wire.FrameChannelData:
			f := append([]byte(nil), c.rbuf[:wire.ChannelHeaderLen+plen]...)
			c.rbuf = c.rbuf[size:]
			return f, nil
		case wire.FrameInvalid:
			return nil, errors.New("invalid frame on stream")
		}
		buf := make([]byte, 65536)
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil, err
		}
		c.rbuf = append(c.rbuf, buf[:n]...)
	}
}

// transact sends a request and returns the response with the same transaction ID, skipping
// data frames in between.
func (c *stunClient) transact(m *stun.Message) (*stun.Message, error) {
	c.send(m.Raw)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		b, err := c.recv(time.Until(deadline))
		if err != nil {
			return nil, err
		}
		if !stun.IsMessage(b) {
			continue
		}
		r := &stun.Message{Raw: b}
		if err := r.Decode(); err != nil {
			return nil, err
		}
		if r.TransactionID == m.TransactionID {
			return r, nil
		}
	}
	return nil, errors.New("no response")
}

// build assembles a request; with credentials set it adds USERNAME, REALM, NONCE and
// MESSAGE-INTEGRITY.
func (c *stunClient) build(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
	setters = append(setters, attrs...)
	if c.key != nil {
		setters = append(setters, stun.NewUsername(c.username), stun.NewRealm(c.realm),
			stun.NewNonce(c.nonce), stun.MessageIntegrity(c.key))
	}
	if c.fp {
		setters = append(setters, stun.Fingerprint)
	}
	m, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// do sends an authenticated request and returns the response, following one 438 (stale
// nonce) as a client must. It returns 0 for success or the error code.
func (c *stunClient) do(method stun.Method, attrs ...stun.Setter) (int, *stun.Message) {
	c.t.Helper()
	for range 2 {
		r, err := c.transact(c.build(method, attrs...))
		if err != nil {
			c.t.Fatalf("%s: %v", method, err)
		}
		c.last = r
		code := errCode(r)
		if code == 438 {
			var n stun.Nonce
			if err := n.GetFrom(r); err != nil {
				c.t.Fatal("438 without NONCE")
			}
			c.nonce = n.String()
			continue
		}
		return code, r
	}
	c.t.Fatalf("%s: stale nonce twice", method)
	return 0, nil
}

func errCode(m *stun.Message) int {
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return -1
	}
	return int(ec.Code)
}

var udpTransport = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

func hasTransport(attrs []stun.Setter) bool {
	for _, a := range attrs {
		if r, ok := a.(stun.RawAttribute); ok && r.Type == stun.AttrRequestedTransport {
			return true
		}
	}
	return false
}

// allocate performs the 401 challenge and an authenticated Allocate. It returns the error
// code (0 on success) and the relayed transport address.
func (c *stunClient) allocate(username, password string, extra ...stun.Setter) (int, netip.AddrPort) {
	c.t.Helper()
	c.key = nil
	attrs := extra
	if !hasTransport(extra) {
		attrs = append([]stun.Setter{udpTransport}, extra...)
	}
	r, err := c.transact(c.build(stun.MethodAllocate, attrs...))
	if err != nil {
		c.t.Fatal(err)
	}
	if errCode(r) != 401 {
		c.t.Fatalf("unauthenticated Allocate: code %d, want 401", errCode(r))
	}
	var nonce stun.Nonce
	var realm stun.Realm
	if nonce.GetFrom(r) != nil || realm.GetFrom(r) != nil {
		c.t.Fatal("401 without NONCE or REALM")
	}
	c.username, c.realm, c.nonce = username, realm.String(), nonce.String()
	c.key = auth.LongTermKey(username, c.realm, password)
	code, resp := c.do(stun.MethodAllocate, attrs...)
	if code != 0 {
		return code, netip.AddrPort{}
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		c.t.Fatal(err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return 0, netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
}

// peerAttr is an XOR-PEER-ADDRESS; v6 forces the IPv6 family even for an IPv4 address, which
// writes the IPv4-mapped form (C02).
type peerAttr struct {
	ap netip.AddrPort
	v6 bool
}

func (p peerAttr) AddTo(m *stun.Message) error {
	var v []byte
	port := p.ap.Port() ^ uint16(wire.Magic>>16)
	if p.ap.Addr().Is4() && !p.v6 {
		v = make([]byte, 8)
		v[1] = 1
		a := p.ap.Addr().As4()
		binary.BigEndian.PutUint32(v[4:], binary.BigEndian.Uint32(a[:])^wire.Magic)
	} else {
		v = make([]byte, 20)
		v[1] = 2
		a := p.ap.Addr().As16()
		var key [16]byte
		binary.BigEndian.PutUint32(key[:], wire.Magic)
		copy(key[4:], m.TransactionID[:])
		for i := range a {
			v[4+i] = a[i] ^ key[i]
		}
	}
	binary.BigEndian.PutUint16(v[2:], port)
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

func peer(s string) peerAttr  { return peerAttr{ap: netip.MustParseAddrPort(s)} }
func peer6(s string) peerAttr { return peerAttr{ap: netip.MustParseAddrPort(s), v6: true} }
func chanNum(n uint16) stun.RawAttribute {
	return stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(n >> 8), byte(n), 0, 0}}
}

func lifetime(secs uint32) stun.RawAttribute {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, secs)
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: v}
}

// channelData frames payload on channel num, padded on streams.
func (c *stunClient) channelData(num uint16, payload []byte) []byte {
	b := make([]byte, 4, 4+len(payload)+3)
	binary.BigEndian.PutUint16(b, num)
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	b = append(b, payload...)
	if c.stream {
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// sendIndication builds a Send indication to p carrying data.
func (c *stunClient) sendIndication(p peerAttr, data []byte) []byte {
	c.t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		p, stun.RawAttribute{Type: stun.AttrData, Value: data})
	if err != nil {
		c.t.Fatal(err)
	}
	return m.Raw
}

// expectData waits for relayed data from the peer: ChannelData on num, or (num 0) a Data
// indication from from.
func (c *stunClient) expectData(num uint16, from netip.AddrPort, want []byte) {
	c.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		b, err := c.recv(time.Until(deadline))
		if err != nil {
			break
		}
		if num != 0 && len(b) >= 4 && wire.Be16(b) == num {
			if !bytes.Equal(b[4:], want) {
				c.t.Fatalf("ChannelData payload %x, want %x", b[4:], want)
			}
			return
		}
		if num == 0 && stun.IsMessage(b) && wire.Be16(b) == wire.TypeDataIndication {
			m := &stun.Message{Raw: b}
			if err := m.Decode(); err != nil {
				c.t.Fatal(err)
			}
			src, _ := wire.DecodeXORAddr(wire.Attr(b, wire.AttrXORPeerAddress), b)
			if src != from {
				c.t.Fatalf("Data indication from %s, want %s", src, from)
			}
			if d := wire.Attr(b, wire.AttrData); !bytes.Equal(d, want) {
				c.t.Fatalf("Data indication payload %x, want %x", d, want)
			}
			return
		}
	}
	c.t.Fatalf("no relayed data (channel %#x) within 3s", num)
}

// expectNothing asserts that no data frame arrives within d.
func (c *stunClient) expectNothing(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, err := c.recv(time.Until(deadline))
		if err != nil {
			return
		}
		if !stun.IsMessage(b) || wire.Be16(b) == wire.TypeDataIndication {
			c.t.Fatalf("unexpected data frame %x", b)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// freePorts returns a range of n relay ports on 127.0.0.1 that are free for UDP and TCP now,
// above the kernel's ephemeral range (32768-60999 by default), where no outgoing connection
// of another program takes one in the middle of a test that counts them.
func freePorts(t testing.TB, n int) (uint16, uint16) {
	t.Helper()
	for try := 0; try < 200; try++ {
		base := 61000 + mrand.IntN(65535-61000-n)
		var held []io.Closer
		ok := true
		for p := base; p < base+n && ok; p++ {
			u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				ok = false
				break
			}
			held = append(held, u)
			l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		for _, c := range held {
			_ = c.Close()
		}
		if ok {
			return uint16(base), uint16(base + n - 1)
		}
	}
	t.Fatalf("no %d free ports in a row", n)
	return 0, 0
}
