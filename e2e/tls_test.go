package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// writeChain writes a root CA, an intermediate and one leaf per name (leaf and intermediate
// in each certificate file, as a CA issues them) and returns the files and the root pool.
func writeChain(t *testing.T, names ...string) (files map[string][2]string, roots *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	newCert := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if parentKey == nil {
			parent, parentKey = tmpl, key
		}
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, der, key
	}
	ca := func(name string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: name}, KeyUsage: x509.KeyUsageCertSign,
			IsCA: true, BasicConstraintsValid: true}
	}
	root, _, rootKey := newCert(ca("Clinic Test Root"), nil, nil)
	inter, interDER, interKey := newCert(ca("Clinic Test Intermediate"), root, rootKey)
	roots = x509.NewCertPool()
	roots.AddCert(root)
	files = map[string][2]string{}
	for _, name := range names {
		_, der, key := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, inter, interKey)
		kb, _ := x509.MarshalECPrivateKey(key)
		cert, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})...)
		if err := os.WriteFile(cert, chain, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = [2]string{cert, keyFile}
	}
	return files, roots
}

// freeTCPPort returns a port that was free on 127.0.0.1 a moment ago: the shared-port mode
// is chosen by naming the same address twice, which port 0 cannot express.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// C21 end to end: one TLS port (443 in production) carries turns: and the HTTPS API, as a
// clinic with one address behind an HTTPS-only firewall needs. Each client gets the
// certificate its SNI names, with the intermediate; HTTP/2 and HTTP/1.1 clients reach the
// API; pion's TURN client (no ALPN, like browsers) and coturn's turnutils_uclient -S relay
// through the same port.
func TestC21SharedTLSPort(t *testing.T) {
	files, roots := writeChain(t, "turn.clinic.test", "api.clinic.test")
	port := freeTCPPort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := startFerry(t, fmt.Sprintf(`
turn:
  udp_listen: []
  tcp_listen: []
  tls_listen: [%q]
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
  allowed_peers: [127.0.0.2/32]
http:
  listen: %q
  tls_cert_file: %s
  tls_key_file: %s
admin:
  listen: "127.0.0.1:0"
`, addr, files["turn.clinic.test"][0], files["turn.clinic.test"][1], addr,
		files["api.clinic.test"][0], files["api.clinic.test"][1]))
	if p.tlsPort != port || p.httpPort != port {
		t.Fatalf("TLS port %d, HTTP port %d, want both %d", p.tlsPort, p.httpPort, port)
	}

	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(fmt.Sprintf("https://api.clinic.test:%d/healthz", port))
		if err != nil {
			t.Fatalf("h2=%t: %v", h2, err)
		}
		resp.Body.Close()
		wantProto := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]
		if resp.StatusCode != 200 || resp.Proto != wantProto {
			t.Errorf("h2=%t: %d over %s", h2, resp.StatusCode, resp.Proto)
		}
		if certs := resp.TLS.PeerCertificates; len(certs) != 2 || !slices.Contains(certs[0].DNSNames, "api.clinic.test") {
			t.Errorf("h2=%t: API served %d certificates, leaf %v", h2, len(certs), certs[0].DNSNames)
		}
		tr.CloseIdleConnections()
	}

	echo := startEcho(t)
	tc, err := tls.Dial("tcp4", addr, &tls.Config{RootCAs: roots, ServerName: "turn.clinic.test"})
	if err != nil {
		t.Fatalf("TURN client: %v", err)
	}
	if leaf := tc.ConnectionState().PeerCertificates[0]; !slices.Contains(leaf.DNSNames, "turn.clinic.test") {
		t.Errorf("TURN client got the certificate for %v", leaf.DNSNames)
	}
	user := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":tls-user"
	client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr,
		Conn: turn.NewSTUNConn(tc), Username: user, Password: auth.RESTPassword(p.secret(t), user), Realm: "ferry",
		LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate over the shared port: %v", err)
	}
	defer relayConn.Close()
	buf := make([]byte, 2000)
	for i := range 20 {
		msg := []byte(fmt.Sprintf("through port %d, message %02d", port, i))
		if _, err := relayConn.WriteTo(msg, echo.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, _, err := relayConn.ReadFrom(buf); err != nil || string(buf[:n]) != string(msg) {
			t.Fatalf("echo %d: %q, %v", i, buf[:n], err)
		}
	}

	// A renewed certificate (certbot replacing the files) serves new handshakes at once, and
	// the allocation made before it goes on relaying.
	renewed, _ := writeChain(t, "turn.clinic.test")
	for i, f := range renewed["turn.clinic.test"] {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files["turn.clinic.test"][i], data, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		_ = os.Chtimes(files["turn.clinic.test"][i], later, later)
	}
	time.Sleep(1100 * time.Millisecond) // Ferry looks at the files' times at most once a second
	var served *x509.Certificate
	for range 2 { // the first handshake after the change may still get the old one
		c, err := tls.Dial("tcp4", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "turn.clinic.test"}) //nolint:gosec // comparing certificates
		if err != nil {
			t.Fatal(err)
		}
		served = c.ConnectionState().PeerCertificates[0]
		_ = c.Close()
	}
	if served.SerialNumber.Cmp(tc.ConnectionState().PeerCertificates[0].SerialNumber) == 0 {
		t.Error("the renewed certificate is not served")
	}
	msg := []byte("still relaying after the renewal")
	if _, err := relayConn.WriteTo(msg, echo.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := relayConn.ReadFrom(buf); err != nil || string(buf[:n]) != string(msg) {
		t.Fatalf("after the renewal: %q, %v", buf[:n], err)
	}

	// coturn's client over TLS (-t -S), Send indications, through the same port. Under load
	// it sometimes counts 2-5 of 200 echoes lost although Ferry wrote every one to its TLS
	// connection (seen in Ferry's counters), so delivery is judged by those counters: every
	// packet it sent reached the peer, and every echo was written back to it.
	uclient := needTool(t, "turnutils_uclient")
	peerPort := startPeer(t)
	relayed := func(direction string) int {
		_, scrape := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.adminPort))
		m := regexp.MustCompile(`ferry_turn_relayed_packets_total\{direction="` + direction + `",transport="tls"\} (\d+)`).FindStringSubmatch(scrape)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	toPeer0, toClient0 := relayed("client_to_peer"), relayed("peer_to_client")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, uclient, "-t", "-S", "-s", "-W", p.secret(t), "-u", "tls-interop",
		"-e", "127.0.0.2", "-r", strconv.Itoa(peerPort), "-p", strconv.Itoa(port),
		"-n", "100", "-l", "120", "-m", "1", "-z", "5", "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("uclient -S: %v\n%s", err, out)
	}
	totals := uclientTotals.FindAllSubmatch(out, -1)
	if len(totals) == 0 {
		t.Fatalf("no totals in uclient output:\n%s", out)
	}
	sent, _ := strconv.Atoi(string(totals[len(totals)-1][1]))
	recv, _ := strconv.Atoi(string(totals[len(totals)-1][2]))
	toPeer, toClient := relayed("client_to_peer")-toPeer0, relayed("peer_to_client")-toClient0
	if sent != 200 || toPeer != sent || toClient != sent || recv < sent*95/100 {
		t.Fatalf("uclient sent %d and counted %d back; Ferry relayed %d to the peer and %d back\n%s",
			sent, recv, toPeer, toClient, out)
	}
}
