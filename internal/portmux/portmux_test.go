package portmux

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

func testCert(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "turn.clinic.test"},
		DNSNames: []string{"turn.clinic.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// echoAll accepts on ln and echoes every connection, prefixed by tag, until ln closes.
func echoAll(ln net.Listener, tag string, wg *sync.WaitGroup) {
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				got := []byte(tag)
				buf := make([]byte, 64)
				for { // until the client pauses: the first byte comes on its own
					_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					n, err := c.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						break
					}
				}
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write(got)
			})
		}
	})
}

var stunBinding = append([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42}, []byte("txid-0123456")...)

// One port serves plain TURN over TCP, TURN over TLS and HTTPS at once: the first byte
// tells TLS from STUN, and inside TLS ALPN or the first byte tells TURN from HTTP; the first
// bytes reach the receiving side unchanged. Garbage is closed, a connection that sends
// nothing is closed after the timeout, and Close leaves no goroutine behind.
func TestOnePortForEverything(t *testing.T) {
	base, roots := testCert(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	m := New(ln, Config{TLS: TLSConfig(base, true), TURNTCP: true, HTTPS: true, Timeout: 300 * time.Millisecond})
	var wg sync.WaitGroup
	echoAll(m.TURNTCP(), "tcp:", &wg)
	echoAll(m.TURNTLS(), "tls:", &wg)
	echoAll(m.HTTPS(), "https:", &wg)
	addr := ln.Addr().String()
	plain := func(first []byte) ([]byte, error) {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(first); err != nil {
			return nil, err
		}
		return io.ReadAll(c)
	}
	secure := func(alpn []string, first []byte) ([]byte, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp4", addr,
			&tls.Config{RootCAs: roots, ServerName: "turn.clinic.test", NextProtos: alpn})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(first); err != nil {
			return nil, err
		}
		return io.ReadAll(c)
	}
	get := []byte("GET /healthz HTTP/1.1\r\n\r\n")
	cases := []struct {
		name string
		run  func() ([]byte, error)
		want string
	}{
		{"plain STUN", func() ([]byte, error) { return plain(stunBinding) }, "tcp:" + string(stunBinding)},
		{"TLS, no ALPN, STUN", func() ([]byte, error) { return secure(nil, stunBinding) }, "tls:" + string(stunBinding)},
		{"TLS, stun.turn", func() ([]byte, error) { return secure([]string{ALPNTURN}, stunBinding) }, "tls:" + string(stunBinding)},
		{"TLS, coturn's ALPN", func() ([]byte, error) { return secure([]string{ALPNHTTP11, ALPNTURN}, stunBinding) }, "tls:" + string(stunBinding)},
		{"TLS, h2", func() ([]byte, error) { return secure([]string{ALPNHTTP2}, get) }, "https:" + string(get)},
		{"TLS, http/1.1", func() ([]byte, error) { return secure([]string{ALPNHTTP11}, get) }, "https:" + string(get)},
		{"TLS, no ALPN, HTTP", func() ([]byte, error) { return secure(nil, get) }, "https:" + string(get)},
		{"plain HTTP", func() ([]byte, error) { return plain(get) }, ""},
		{"garbage", func() ([]byte, error) { return plain([]byte{0xFF, 0xFE, 0xFD}) }, ""},
	}
	var cw sync.WaitGroup
	for range 5 { // all kinds at once, five times over
		for _, tc := range cases {
			cw.Go(func() {
				got, err := tc.run()
				if tc.want == "" {
					if len(got) != 0 {
						t.Errorf("%s: answered %q, want closed", tc.name, got)
					}
					return
				}
				if err != nil || !bytes.Equal(got, []byte(tc.want)) {
					t.Errorf("%s: got %q (%v), want %q", tc.name, got, err, tc.want)
				}
			})
		}
	}
	cw.Wait()

	// A connection that sends nothing is closed when the first-byte timeout runs out.
	silent, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("a silent connection: %v after %s", err, time.Since(start))
	}
	silent.Close()
	// A silent connection pending at Close ends with it.
	pending, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	time.Sleep(50 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// The TLS policy: TLS 1.2 or newer, AEAD suites only, ALPN stun.turn first.
func TestTLSConfig(t *testing.T) {
	base, _ := testCert(t)
	c := TLSConfig(base, false)
	if c.MinVersion != tls.VersionTLS12 || len(c.NextProtos) != 1 || c.NextProtos[0] != ALPNTURN {
		t.Fatalf("TURN-only: %+v", c)
	}
	for _, s := range c.CipherSuites {
		for _, insecure := range tls.InsecureCipherSuites() {
			if s == insecure.ID {
				t.Errorf("insecure suite %s", insecure.Name)
			}
		}
		if info := tls.CipherSuiteName(s); bytes.Contains([]byte(info), []byte("CBC")) {
			t.Errorf("CBC suite %s", info)
		}
	}
	if s := TLSConfig(base, true).NextProtos; len(s) != 3 || s[0] != ALPNTURN {
		t.Fatalf("shared: %v", s)
	}
}
