package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferryrelay/ferry/check"
	"github.com/ferryrelay/ferry/signaling"
)

// testCA is a private certificate authority for the tests' TURN certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the root in PEM, for --ca
	dir  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "Clinic Test CA"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: c, key: key, dir: t.TempDir()}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	if err := os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// leaf issues a server certificate for names (IP addresses or DNS names), valid from
// notBefore to notAfter, and returns its certificate and key files.
func (ca *testCA) leaf(t *testing.T, name string, names []string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// ferryCheck runs `ferry check args...` and returns its output and exit status.
func ferryCheck(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), append([]string{"check"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), status
}

// tlsOnlyFerry runs a Ferry with only TURN over TLS on loopback, serving cert and key.
func tlsOnlyFerry(t *testing.T, cert, key string) *ferryProc {
	t.Helper()
	return startFerry(t, fmt.Sprintf(`turn:
  udp_listen: []
  tcp_listen: []
  tls_listen: ["127.0.0.1:0"]
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
`, cert, key))
}

// An operator's `ferry check` against a running Ferry, from its ICE-servers endpoint with an
// API key: every URL it hands out passes on every transport (UDP, TCP, TLS, and TCP and TLS
// on one shared port with HTTPS), with a STUN Binding, two allocations, permissions, a
// relayed round trip between them, Refresh and deletion, and for TLS a verified certificate
// with its days to expiry; the table lists every step with its time.
func TestCheckPassesOnEveryTransport(t *testing.T) {
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "turn", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	apiKey, sum, err := signaling.NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	shared := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	p := startFerry(t, fmt.Sprintf(`server:
  public_host: 127.0.0.1
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0", %[1]q]
  tls_listen: ["127.0.0.1:0", %[1]q]
  tls_cert_file: %[2]s
  tls_key_file: %[3]s
relay:
  bind_ip: 127.0.0.1
http:
  listen: %[1]q
api:
  keys: [{name: ops, sha256: %[4]s}]
`, shared, cert, key, hex.EncodeToString(sum[:])))
	keyFile := filepath.Join(t.TempDir(), "api.key")
	if err := os.WriteFile(keyFile, []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, status := ferryCheck(t, "https://"+shared+"/v1/ice-servers", "--api-key-file", keyFile, "--ca", ca.file, "--json")
	if status != 0 {
		t.Fatalf("exit %d\n%s\n%s", status, out, stderr)
	}
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	port := strings.TrimPrefix(shared, "127.0.0.1:")
	var urls []string
	transports := map[string]int{}
	for _, r := range rep.Results {
		urls = append(urls, r.URL)
		transports[r.Transport]++
		if !r.OK || r.MappedAddress == "" {
			t.Errorf("%s: %+v", r.URL, r)
		}
		if strings.HasPrefix(r.URL, "stun:") {
			continue
		}
		var steps []string
		for _, s := range r.Steps {
			steps = append(steps, s.Name)
			if !s.OK || s.Millis <= 0 {
				t.Errorf("%s: step %+v", r.URL, s)
			}
		}
		want := []string{"binding", "allocate", "permission", "round trip", "refresh", "delete"}
		switch r.Transport {
		case "tcp":
			want = append([]string{"connect"}, want...)
		case "tls":
			want = append([]string{"connect", "tls"}, want...)
			if c := r.Certificate; c == nil || !c.Verified || c.DaysLeft < 88 || c.DaysLeft > 90 || !slices.Contains(c.Names, "127.0.0.1") ||
				!slices.Equal(c.Chain, []string{"127.0.0.1", "Clinic Test CA"}) {
				t.Errorf("%s: certificate %+v", r.URL, c)
			}
		}
		if !slices.Equal(steps, want) {
			t.Errorf("%s: steps %q, want %q", r.URL, steps, want)
		}
	}
	if !rep.OK || transports["udp"] != 2 || transports["tcp"] != 2 || transports["tls"] != 2 {
		t.Fatalf("ok %t, transports %v, URLs %q", rep.OK, transports, urls)
	}
	for _, u := range []string{"turn:127.0.0.1:" + port + "?transport=tcp", "turns:127.0.0.1:" + port + "?transport=tcp"} {
		if !slices.Contains(urls, u) {
			t.Errorf("the ICE servers lack %s: %q", u, urls)
		}
	}

	// The table, from TURN URLs and the secret file.
	secretFile := filepath.Join(p.dataDir, "turn-secret")
	out, stderr, status = ferryCheck(t, "turn:"+shared+"?transport=tcp", "turns:"+shared+"?transport=tcp",
		fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", p.udpPort), "--secret-file", secretFile, "--ca", ca.file)
	if status != 0 || stderr != "" {
		t.Fatalf("exit %d\n%s\n%s", status, out, stderr)
	}
	t.Logf("ferry check:\n%s", out)
	for _, want := range []string{"URL", "STEP", "TIME", "turns:" + shared + "?transport=tcp  connect", "tls ", "TLS 1.3; 127.0.0.1 < Clinic Test CA; expires in 89 days",
		"round trip  ok", "delete      ok", "3 of 3 URLs passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// `ferry check` fails with exit status 1 and one clear line per failed URL: a wrong secret,
// a wrong API key, a closed port (TCP and UDP), a server that answers nothing (UDP, TCP and
// TLS), an expired certificate, one for another name, one from an unknown authority, and a
// server whose peer policy refuses relaying between its own allocations (coturn refuses
// loopback peers unless told otherwise).
func TestCheckFailsClearly(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	goodCert, goodKey := ca.leaf(t, "good", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(30*24*time.Hour))
	expCert, expKey := ca.leaf(t, "expired", []string{"127.0.0.1"}, now.Add(-60*24*time.Hour), now.Add(-3*24*time.Hour-time.Hour))
	otherCert, otherKey := ca.leaf(t, "other", []string{"turn.other.test"}, now.Add(-time.Hour), now.Add(30*24*time.Hour))
	_, sum, _ := signaling.NewAPIKey()
	p := startFerry(t, fmt.Sprintf(`server:
  public_host: 127.0.0.1
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: []
  tls_listen: ["127.0.0.1:0"]
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
http:
  listen: "127.0.0.1:0"
api:
  keys: [{name: ops, sha256: %x}]
`, goodCert, goodKey, sum))
	expired, other := tlsOnlyFerry(t, expCert, expKey), tlsOnlyFerry(t, otherCert, otherKey)

	silentUDP, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silentUDP.Close()
	go func() { // reads and never answers
		buf := make([]byte, 1500)
		for {
			if _, _, err := silentUDP.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	silentTCP, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silentTCP.Close()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	accepted := make(chan net.Conn, 8)
	go func() { // accepts and never answers
		for {
			c, err := silentTCP.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	peerPolicy := startCoturnLoopback(t)

	secret := p.secret(t)
	closedTCP, closedUDP := freeTCPPort(t), freeUDPPort(t, "127.0.0.1")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong secret", []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", p.udpPort), "--secret", "not-the-secret-of-this-ferry"},
			"allocate: 401 Unauthorized: the credentials were refused"},
		{"wrong API key", []string{fmt.Sprintf("http://127.0.0.1:%d/v1/ice-servers", p.httpPort), "--api-key", "fk_wrong"},
			"ICE servers: 401 Unauthorized: missing or unknown API key (Authorization: Bearer <key>) (check the API key)"},
		{"closed TCP port", []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=tcp", closedTCP), "--secret", secret},
			fmt.Sprintf("connect: connection to 127.0.0.1:%d refused: nothing listens there", closedTCP)},
		{"closed UDP port", []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", closedUDP), "--secret", secret},
			fmt.Sprintf("binding: no answer from 127.0.0.1:%d/udp within 1s", closedUDP)},
		{"silent UDP", []string{"turn:" + silentUDP.LocalAddr().String() + "?transport=udp", "--secret", secret},
			"binding: no answer from " + silentUDP.LocalAddr().String() + "/udp within 1s"},
		{"silent TCP", []string{"turn:" + silentTCP.Addr().String() + "?transport=tcp", "--secret", secret},
			"binding: no answer from " + silentTCP.Addr().String() + "/tcp within 1s"},
		{"silent TLS", []string{"turns:" + silentTCP.Addr().String() + "?transport=tcp", "--secret", secret},
			"tls: no TLS handshake within 1s"},
		{"expired certificate", []string{fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", expired.tlsPort), "--secret", secret, "--ca", ca.file},
			"tls: the certificate expired on " + now.Add(-3*24*time.Hour-time.Hour).UTC().Format(time.DateOnly) + " (3 days ago): browsers refuse it"},
		{"wrong name", []string{fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", other.tlsPort), "--secret", secret, "--ca", ca.file},
			"tls: the certificate is for turn.other.test, not 127.0.0.1: browsers refuse it"},
		{"unknown authority", []string{fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", p.tlsPort), "--secret", secret},
			`tls: the certificate (issued by "Clinic Test CA") does not chain to a trusted root`},
		{"peer policy", []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", peerPolicy), "--secret", coturnSecret},
			"permission: 403 Forbidden: the server refuses to relay to 127.0.0.1:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			out, stderr, status := ferryCheck(t, append(c.args, "--timeout", "1s")...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			want := []string{"FAIL ", "ferry: check: 1 of 1 URLs failed"}
			if strings.HasPrefix(c.name, "wrong API") { // no URL to check: the command fails as a whole
				want = []string{"ferry: check: "}
			}
			if status != 1 || len(lines) != len(want) || !strings.HasPrefix(lines[0], want[0]) || !strings.Contains(lines[0], c.want) ||
				lines[len(lines)-1] != want[len(want)-1] && len(want) == 2 {
				t.Fatalf("exit %d, want 1 with %q\nstderr:\n%s\nstdout:\n%s", status, c.want, stderr, out)
			}
			t.Logf("%s (%s): %s", c.name, time.Since(start).Round(time.Millisecond), lines[0])
		})
	}
	// The good certificate passes with its CA (and the held silent connections end).
	if out, stderr, status := ferryCheck(t, fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", p.tlsPort), "--secret", secret, "--ca", ca.file); status != 0 {
		t.Fatalf("good certificate: exit %d\n%s%s", status, out, stderr)
	}
	silentTCP.Close()
	for c := range accepted {
		held = append(held, c)
	}
}

const coturnSecret = "coturn-test-secret-0123456789"

// startCoturnLoopback runs coturn's turnserver on a free loopback UDP port with REST
// credentials and its default peer policy, which refuses loopback peers, so relaying
// between two of its own (loopback) allocations is refused. It returns the port.
func startCoturnLoopback(t *testing.T) int {
	t.Helper()
	bin := needTool(t, "turnserver")
	dir := t.TempDir()
	port := freeUDPPort(t, "127.0.0.1")
	conf := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`listening-ip=127.0.0.1
listening-port=%d
relay-ip=127.0.0.1
min-port=40000
max-port=40999
use-auth-secret
static-auth-secret=%s
realm=coturn-test
no-tls
no-dtls
no-tcp
no-cli
no-stdout-log
log-file=%s
pidfile=%s
userdb=%s
`, port, coturnSecret, filepath.Join(dir, "coturn.log"), filepath.Join(dir, "coturn.pid"), filepath.Join(dir, "coturn.db"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	probe, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	binding := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	buf := make([]byte, 512)
	for range 100 {
		_, _ = probe.Write(binding)
		_ = probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := probe.Read(buf); err == nil {
			return port
		}
		time.Sleep(100 * time.Millisecond) // not listening yet: ICMP refused the probe
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "coturn*.log"))
	var log []byte
	if len(logs) > 0 {
		log, _ = os.ReadFile(logs[0])
	}
	t.Fatalf("coturn does not answer a Binding request on port %d; its log:\n%s", port, log)
	return 0
}

// checkPageLayout asserts that the check page is one column at a phone's, a small laptop's
// and a desktop's width: the results table spans at least 80 % of the window, no word of
// its headers, transports, results and times is broken across lines (URLs and addresses
// may be), and nothing scrolls sideways. (At 900 and 1280 px the page used to keep the consultation
// page's two-column grid: left half empty, "Tra/ns/po/rt" in the right one.)
func checkPageLayout(t *testing.T, tb *tab) {
	t.Helper()
	type layout struct {
		Ratio    float64
		Broken   []string
		Overflow bool
	}
	for _, w := range []int64{1280, 900, 360} {
		if err := chromedp.Do(tb.ctx, chromedp.EmulateViewport(w, 900)); err != nil {
			t.Fatal(err)
		}
		got, err := evalJS[layout](tb, `(() => {
			const table = document.querySelector('[data-testid=results]');
			const probe = document.createElement('span');
			probe.style.cssText = 'position: absolute; visibility: hidden; white-space: nowrap';
			const broken = [];
			for (const c of table.querySelectorAll('th, td:not(.url)')) {
				const cs = getComputedStyle(c);
				const inner = c.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
				probe.style.font = cs.font;
				const words = c.cloneNode(true);
				words.querySelectorAll('.url').forEach((u) => u.remove()); // URLs and addresses may break
				for (const word of words.textContent.split(/\s+/).filter(Boolean)) {
					probe.textContent = word;
					c.append(probe);
					if (probe.getBoundingClientRect().width > inner + 0.5) broken.push(word);
					probe.remove();
				}
			}
			const wrap = table.parentElement;
			return { ratio: table.getBoundingClientRect().width / window.innerWidth, broken,
				overflow: wrap.scrollWidth > wrap.clientWidth || document.documentElement.scrollWidth > window.innerWidth };
		})()`)
		if err != nil {
			t.Fatal(err)
		}
		if got.Ratio < 0.8 || len(got.Broken) > 0 || got.Overflow {
			t.Errorf("at %d px: the results table spans %.0f %% of the window (want ≥ 80 %%), broken words %q, sideways scrolling %v",
				w, 100*got.Ratio, got.Broken, got.Overflow)
		}
	}
}

// openCheckPage opens a `ferry check-link` link to e's /check page in a new Chromium and
// waits until the check finished.
func openCheckPage(t *testing.T, e *pageEnv, o browserOpts) *tab {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), "check-link", "--json", "--ttl", "1h", "--config", e.cfg, "--data-dir", e.p.dataDir)
	cmd.Env = append(os.Environ(), "FERRY_HTTP_LISTEN=127.0.0.1:0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ferry check-link: %v\n%s", err, out)
	}
	var link signaling.CheckLink
	if err := json.Unmarshal(out, &link); err != nil || !strings.Contains(link.URL, "/check#t=") {
		t.Fatalf("ferry check-link --json: %v\n%s", err, out)
	}
	tb := openTab(t, "it", o)
	tb.navigate(e.base + link.URL[strings.Index(link.URL, "/check#"):])
	tb.waitJS(`document.body.dataset.state === 'done'`, 20*time.Second, "the check finished")
	return tb
}

// interfaceError makes every RTCPeerConnection report, once its gathering starts, the
// icecandidateerror Chromium reports on a host with several interfaces for each interface the
// TURN server is not reached through (a fresh-user trial's report said "error 701 ..." under
// a TCP 3478 that worked). Chromium here has loopback only and reports none by itself.
const interfaceError = `(() => {
	window.__interfaceErrors = 0;
	const sld = RTCPeerConnection.prototype.setLocalDescription;
	RTCPeerConnection.prototype.setLocalDescription = async function (...args) {
		const r = await sld.apply(this, args);
		const url = [].concat(this.getConfiguration().iceServers[0].urls)[0];
		this.dispatchEvent(new RTCPeerConnectionIceErrorEvent('icecandidateerror',
			{ errorCode: 701, errorText: 'Address not associated with the desired network interface.', url, address: '::1', port: 0 }));
		window.__interfaceErrors++;
		return r;
	};
})()`

// The /check page, opened from a `ferry check-link` link in Chromium against a Ferry on
// loopback with rooms turned off (the page works on its own), reports a relay candidate for
// UDP, TCP and TLS with its time, lists the candidates, and writes the report for IT, with
// no error under a transport that works (an interface's 701 is not the transport's problem).
func TestCheckPageInChromium(t *testing.T) {
	e := startPageFerry(t, "  enabled: false\n")
	tb := openCheckPage(t, e, browserOpts{spki: e.spki, width: 1024, height: 900, init: interfaceError})
	type row struct {
		Transport, Port, OK, Ms string
	}
	rows, err := evalJS[[]row](tb, `[...document.querySelectorAll('#rows tr')].map((r) => ({transport: r.dataset.transport, port: r.dataset.port, ok: r.dataset.ok, ms: r.dataset.ms || ''}))`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range rows {
		ms, _ := strconv.Atoi(r.Ms)
		if r.OK != "true" || ms <= 0 || ms > 6000 {
			t.Errorf("%s %s: ok %s after %s ms", r.Transport, r.Port, r.OK, r.Ms)
		}
		got[r.Transport] = true
	}
	if len(rows) != 3 || !got["udp"] || !got["tcp"] || !got["tls"] {
		t.Fatalf("rows %+v", rows)
	}
	verdict := tb.eval(`document.querySelector('[data-testid=verdict]').dataset.result`)
	relays := tb.eval(`[...document.querySelectorAll('#cands tr[data-type=relay]')].map((r) => r.children[3].textContent).sort().join(',')`)
	report := tb.eval(`document.querySelector('[data-testid=report]').textContent`).(string)
	if verdict != "good" || relays != "tcp,tls,udp" || !strings.Contains(report, fmt.Sprintf("TLS %d", e.p.tlsPort)) ||
		!strings.Contains(report, "relay candidate after") {
		t.Fatalf("verdict %v, relay protocols %v, report:\n%s", verdict, relays, report)
	}
	t.Logf("check page report:\n%s", report)
	if fired, shown := tb.eval(`window.__interfaceErrors`), tb.eval(`document.getElementById('errors').textContent`); fired != float64(3) ||
		shown != "" || strings.Contains(report, "error") {
		t.Errorf("%v interface errors fired; errors shown for transports that work: %q; report:\n%s", fired, shown, report)
	}
	checkPageLayout(t, tb)
	// German on request, results kept.
	tb.click("lang")
	if lang, heading := tb.eval(`document.documentElement.lang`), tb.eval(`document.querySelector('h1').textContent`); lang != "de" || heading != "Verbindungsprüfung" ||
		!strings.Contains(tb.eval(`document.querySelector('[data-testid=verdict]').textContent`).(string), "Videosprechstunden funktionieren") {
		t.Errorf("after the language switch: lang %v, heading %v", lang, heading)
	}
	noErrs(t, tb)
}

// A Ferry without TLS: the /check page, whose intro promises UDP, TCP and TLS on 443, says
// in a row of its own, and in the report, that the server does not offer TLS (as the
// consultation page's connection test does), in English and in German.
func TestCheckPageWithoutTLS(t *testing.T) {
	e := startPageFerry(t, "  enabled: false\n", "udp", "tcp")
	tb := openCheckPage(t, e, browserOpts{spki: e.spki, width: 1024, height: 900})
	const read = `[...document.querySelectorAll('#rows tr')].map((r) => r.dataset.transport + ' ' + r.dataset.ok + ' ' + r.querySelector('.result').textContent.replace(/relay address .*/, 'relay address'))
		.concat(document.querySelector('[data-testid=report]').textContent.split('\n').filter((l) => l.startsWith('TLS')))`
	want := []string{"udp true works: relay address", "tcp true works: relay address", "tls absent not offered by this server",
		"TLS       not offered by this server"}
	if got := toStrings(tb.eval(read)); !slices.Equal(got, want) {
		t.Errorf("rows and the report's TLS line:\n%q, want\n%q", got, want)
	}
	checkPageLayout(t, tb)
	tb.click("lang")
	want = []string{"udp true funktioniert: Relay-Adresse", "tcp true funktioniert: Relay-Adresse", "tls absent von diesem Server nicht angeboten",
		"TLS       von diesem Server nicht angeboten"}
	if got := toStrings(tb.eval(strings.ReplaceAll(read, "relay address", "Relay-Adresse"))); !slices.Equal(got, want) {
		t.Errorf("in German:\n%q, want\n%q", got, want)
	}
	noErrs(t, tb)
}
