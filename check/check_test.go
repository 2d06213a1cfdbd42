package check

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// The three shapes of ICE-servers answers give every URL with its server's credential.
func TestParseICEServers(t *testing.T) {
	for name, c := range map[string]struct {
		doc  string
		want []Target
	}{
		"RTCConfiguration": {`{"iceServers":[{"urls":["stun:h:3478"]},{"urls":["turn:h:3478?transport=udp","turns:h:443?transport=tcp"],"username":"u","credential":"p"}],"ttl":60}`,
			[]Target{{URL: "stun:h:3478"}, {URL: "turn:h:3478?transport=udp", Username: "u", Password: "p"}, {URL: "turns:h:443?transport=tcp", Username: "u", Password: "p"}}},
		"urls as a string": {`{"iceServers":[{"urls":"turn:h:3478","username":"u","credential":"p"}]}`,
			[]Target{{URL: "turn:h:3478", Username: "u", Password: "p"}}},
		"array": {`[{"urls":["turn:h:3478"],"username":"u","credential":"p"}]`,
			[]Target{{URL: "turn:h:3478", Username: "u", Password: "p"}}},
		"TURN REST draft": {`{"username":"u","password":"p","ttl":60,"uris":["turn:h:3478?transport=udp"]}`,
			[]Target{{URL: "turn:h:3478?transport=udp", Username: "u", Password: "p"}}},
	} {
		got, err := ParseICEServers([]byte(c.doc))
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, c.want)
		}
	}
	for _, doc := range []string{`{"iceServers":[]}`, `"x"`, `{"iceServers":[{"urls":5}]}`, `<html>`} {
		if _, err := ParseICEServers([]byte(doc)); err == nil {
			t.Errorf("%s: no error", doc)
		}
	}
}

// certChain returns a root and a leaf it issued for names, valid for a week from start.
func certChain(t *testing.T, start time.Time, names ...string) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root"},
		NotBefore: start.Add(-time.Hour), NotAfter: start.Add(365 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: start, NotAfter: start.Add(7 * 24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, leaf
}

// A certificate is judged as a browser judges it, at the clock's time: the chain, the name,
// the validity period; a week before its end it is reported as due for renewal.
func TestVerifyCertificate(t *testing.T) {
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	roots, leaf := certChain(t, start, "turn.clinic.test", "192.0.2.10")
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	at := func(d time.Duration) Options {
		return Options{RootCAs: roots, Now: func() time.Time { return start.Add(d) }}
	}

	c, err := verify(cs, "turn.clinic.test", at(24*time.Hour))
	if err != nil || !c.Verified || c.DaysLeft != 6 || !slices.Equal(c.Chain, []string{"turn.clinic.test", "Test Root"}) ||
		!slices.Equal(c.Names, []string{"turn.clinic.test", "192.0.2.10"}) {
		t.Fatalf("valid: %+v, %v", c, err)
	}
	c.TLSVersion = "TLS 1.3"
	if s := c.summary(); s != "TLS 1.3; turn.clinic.test < Test Root; expires in 6 days (2026-11-08): renew it now" {
		t.Errorf("summary %q", s)
	}
	if _, err := verify(cs, "192.0.2.10", at(time.Hour)); err != nil {
		t.Errorf("IP address in the URL: %v", err)
	}
	for _, c := range []struct {
		host string
		opts Options
		want string
	}{
		{"turn.clinic.test", at(10 * 24 * time.Hour), "the certificate expired on 2026-11-08 (3 days ago)"},
		{"turn.clinic.test", at(-time.Hour), "the certificate is not valid before 2026-11-01T12:00:00Z: check the server's clock"},
		{"turn.other.test", at(time.Hour), "the certificate is for turn.clinic.test, 192.0.2.10, not turn.other.test"},
		{"turn.clinic.test", Options{RootCAs: x509.NewCertPool(), Now: at(time.Hour).Now}, `the certificate (issued by "Test Root") does not chain to a trusted root`},
	} {
		c2, err := verify(cs, c.host, c.opts)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || c2 == nil || c2.Verified {
			t.Errorf("%s at %s: %v, want %q", c.host, c.opts.Now(), err, c.want)
		}
	}
}

// TURN and STUN error responses are named, and the common ones explained.
func TestCodeError(t *testing.T) {
	for code, want := range map[stun.ErrorCode]string{
		401: "401 Unauthorized: the credentials were refused",
		508: "508 Insufficient Capacity: the server has no capacity left, or is draining",
		599: "error 599",
	} {
		if got := codeError(stun.ErrorCodeAttribute{Code: code}).Error(); !strings.HasPrefix(got, want) {
			t.Errorf("%d: %q, want %q", code, got, want)
		}
	}
	if got := codeError(stun.ErrorCodeAttribute{Code: 403, Reason: []byte("Peer Denied")}).Error(); !strings.HasPrefix(got, "403 Peer Denied: ") {
		t.Errorf("server's reason: %q", got)
	}
}

// A URL that is not an ICE server URL fails at once, as one line, whatever it holds.
func TestRunBadURL(t *testing.T) {
	rep := RunAll(context.Background(), []Target{{URL: "https://turn.clinic.test/"}, {URL: "turn:h\n:1"}}, Options{})
	f := rep.Failures()
	if rep.OK || len(f) != 2 || !strings.Contains(f[0], "is not a stun:, turn: or turns: URL") || strings.Contains(f[1], "\n") {
		t.Fatalf("%+v", f)
	}
}
