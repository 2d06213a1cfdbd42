package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/internal/portmux"
	"github.com/pion/stun/v4"
)

// testChain is a root CA, an intermediate, and leaves it signed.
type testChain struct {
	roots            *x509.CertPool
	inter            *x509.Certificate
	interKey, rootKy *ecdsa.PrivateKey
	interDER         []byte
}

func newTestChain(t *testing.T) *testChain {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	inter := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Test Intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	interDER, err := x509.CreateCertificate(rand.Reader, inter, root, &interKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ = x509.ParseCertificate(interDER)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &testChain{roots: pool, inter: inter, interKey: interKey, rootKy: rootKey, interDER: interDER}
}

// leaf returns a certificate for name, signed by the intermediate, with the chain (leaf
// first, then the intermediate) as a server sends it.
func (c *testChain) leaf(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.inter, &key.PublicKey, c.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.interDER}, PrivateKey: key}
}

// C21: TURN over TLS as browsers behind HTTPS-only firewalls use it. The whole chain is
// sent (clients that know only the root verify it), TLS below 1.2 and non-AEAD suites are
// refused, ALPN stun.turn is negotiated, and on a port shared with HTTPS (443) each
// connection goes where it belongs: h2 and http/1.1 by ALPN to HTTP, stun.turn to TURN, and
// without ALPN by the first byte, which is replayed whole to either side.
func TestC21TURNOverTLS(t *testing.T) {
	chain := newTestChain(t)
	turnCert := chain.leaf(t, "turn.clinic.test")
	shared, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := &tls.Config{Certificates: []tls.Certificate{turnCert}}
	mux := portmux.New(shared, portmux.Config{TLS: portmux.TLSConfig(base, true), HTTPS: true})
	t.Cleanup(func() { _ = mux.Close() })
	handed := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := mux.HTTPS().Accept()
			if err != nil {
				return
			}
			handed <- c
		}
	}()
	env := newTestEnv(t, func(c *Config) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_ = c.TLS[0].Close()
		c.TLS = []net.Listener{tls.NewListener(ln, portmux.TLSConfig(base, false)), mux.TURNTLS()}
	})
	dial := func(addr string, conf *tls.Config) (*tls.Conn, error) {
		conf.RootCAs, conf.ServerName = chain.roots, "turn.clinic.test"
		return tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp4", addr, conf)
	}
	binding := func(t *testing.T, conn net.Conn) {
		t.Helper()
		c := &stunClient{t: t, conn: conn, stream: true}
		if code, _ := c.do(stun.MethodBinding); code != 0 {
			t.Fatalf("Binding over TLS: %d", code)
		}
	}

	t.Run("chain and versions", func(t *testing.T) {
		for _, addr := range []string{env.tls.String(), shared.Addr().String()} {
			conn, err := dial(addr, &tls.Config{})
			if err != nil {
				t.Fatalf("%s: verifying with the root only: %v", addr, err)
			}
			if n := len(conn.ConnectionState().PeerCertificates); n != 2 {
				t.Errorf("%s: %d certificates sent, want leaf and intermediate", addr, n)
			}
			binding(t, conn)
			_ = conn.Close()
			for name, conf := range map[string]*tls.Config{
				"TLS 1.1":   {MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
				"CBC suite": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
			} {
				if conn, err := dial(addr, conf); err == nil {
					_ = conn.Close()
					t.Errorf("%s: %s accepted", addr, name)
				}
			}
			for name, conf := range map[string]*tls.Config{
				"TLS 1.2 AEAD": {MaxVersion: tls.VersionTLS12},
				"TLS 1.3":      {MinVersion: tls.VersionTLS13},
			} {
				conn, err := dial(addr, conf)
				if err != nil {
					t.Fatalf("%s: %s refused: %v", addr, name, err)
				}
				_ = conn.Close()
			}
		}
	})

	t.Run("ALPN on the TURN port", func(t *testing.T) {
		conn, err := dial(env.tls.String(), &tls.Config{NextProtos: []string{"stun.turn"}})
		if err != nil {
			t.Fatal(err)
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != "stun.turn" {
			t.Errorf("negotiated %q", p)
		}
		binding(t, conn)
		_ = conn.Close()
		if conn, err := dial(env.tls.String(), &tls.Config{NextProtos: []string{"h2", "http/1.1"}}); err == nil {
			_ = conn.Close()
			t.Error("an HTTP client was taken on the TURN-only port")
		}
	})

	t.Run("routing on the shared port", func(t *testing.T) {
		// No ALPN (browsers), stun.turn, coturn's client (http/1.1 before stun.turn), and a
		// client that offers only http/1.1 but speaks STUN: all TURN.
		for _, alpn := range [][]string{nil, {"stun.turn"}, {"http/1.1", "stun.turn", "stun.nat-discovery"}, {"http/1.1"}} {
			conn, err := dial(shared.Addr().String(), &tls.Config{NextProtos: alpn})
			if err != nil {
				t.Fatal(err)
			}
			binding(t, conn)
			_ = conn.Close()
		}
		for _, tc := range []struct {
			alpn []string
			want string
		}{{[]string{"h2"}, "h2"}, {[]string{"http/1.1"}, "http/1.1"}, {[]string{"h2", "http/1.1"}, "h2"}, {nil, ""}} {
			conn, err := dial(shared.Addr().String(), &tls.Config{NextProtos: tc.alpn})
			if err != nil {
				t.Fatal(err)
			}
			request := "GET /healthz HTTP/1.1\r\nHost: api.clinic.test\r\n\r\n"
			if _, err := io.WriteString(conn, request); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-handed:
				buf := make([]byte, len(request))
				_ = got.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.ReadFull(got, buf); err != nil || string(buf) != request {
					t.Errorf("ALPN %v: handed connection read %q, %v", tc.alpn, buf, err)
				}
				if tlsConn, ok := got.(*tls.Conn); ok && tlsConn.ConnectionState().NegotiatedProtocol != tc.want {
					t.Errorf("ALPN %v: negotiated %q", tc.alpn, tlsConn.ConnectionState().NegotiatedProtocol)
				}
				_ = got.Close()
			case <-time.After(3 * time.Second):
				t.Errorf("ALPN %v: not handed to HTTP", tc.alpn)
			}
			_ = conn.Close()
		}
	})
}
