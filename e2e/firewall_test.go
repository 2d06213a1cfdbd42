package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/check"
	"github.com/ferryrelay/ferry/signaling"
)

// The "done when": a clinic runs Ferry with one open TCP port 443, and a patient
// behind a hospital firewall that lets nothing else out gets a working relayed call.
//
// The test builds its own network (netLab): the patient's browser in the client namespace
// behind nftables that drops all UDP and all TCP except to port 443, Ferry in the server
// namespace with TURN over UDP and TCP on 3478 and TURN over TLS, TURN over TCP and HTTPS
// on one port 443, and the doctor on the far side with no firewall. The client and the far
// side have no route to each other: media must go through Ferry.
//
//   - ferry check from the client proves the firewall real: UDP and TCP 3478 get nothing;
//   - a pion/webrtc call, ICE servers from Ferry's endpoint, connects through
//     turns:…:443 when 443 passes only TLS, through turn:…:443?transport=tcp when 443
//     passes everything but TLS (a proxy that breaks TLS to unknown hosts), and over 443
//     when 443 passes everything; media and data flow both ways;
//   - headless Chromium on the consultation page does the same call (relay over TLS 443,
//     frames decoded on both sides), and the /check page shows what the firewall lets out.
func TestFirewallOnly443(t *testing.T) {
	lab := newNetLab(t)
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "lab", []string{labServerIP}, time.Now().Add(-time.Hour), time.Now().Add(30*24*time.Hour))
	apiKey, sum, err := signaling.NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ferry.yaml")
	p := startFerryWrapped(t, lab.wrap(labServer), cfg, filepath.Join(dir, "data"), fmt.Sprintf(`server:
  public_host: %[1]s
turn:
  udp_listen: ["%[1]s:3478"]
  tcp_listen: ["%[1]s:3478", "%[1]s:443"]
  tls_listen: ["%[1]s:443"]
  tls_cert_file: %[2]s
  tls_key_file: %[3]s
relay:
  bind_ip: %[1]s
  allowed_peers: [198.18.0.0/15]
http:
  listen: "%[1]s:443"
  public_url: https://%[1]s
api:
  keys: [{name: clinic-app, sha256: %[4]s}]
`, labServerIP, cert, key, hex.EncodeToString(sum[:])))
	lab.track(p.cmd.Process)
	if p.tcpPort != 3478 || p.tlsPort != 443 || p.httpPort != 443 {
		t.Fatalf("ports: tcp %d, tls %d, http %d", p.tcpPort, p.tlsPort, p.httpPort)
	}
	fw := &fwEnv{t: t, lab: lab, p: p, ca: ca.file, apiKey: apiKey}

	t.Run("only TLS on 443", func(t *testing.T) {
		lab.firewall(fwTLSOnly)
		fw.checkFromClient(t, map[string]bool{"udp 3478": false, "tcp 3478": false, "tcp 443": false, "tls 443": true})
		if d := lab.dropped(); d["UDP"] == 0 || d["TCP not to 443"] == 0 || d["not TLS"] == 0 {
			t.Errorf("the firewall dropped nothing of what it should: %v", d)
		}
		c, _ := fw.call(t)
		if c.Local.Type != "relay" || c.Local.RelayProtocol != "tls" {
			t.Fatalf("the client's selected candidate is %+v, want relay over TLS", c.Local)
		}
	})
	t.Run("TLS blocked, TCP 443 open", func(t *testing.T) {
		lab.firewall(fwNoTLS)
		fw.checkFromClient(t, map[string]bool{"udp 3478": false, "tcp 3478": false, "tcp 443": true, "tls 443": false})
		c, _ := fw.call(t)
		if c.Local.Type != "relay" || c.Local.RelayProtocol != "tcp" {
			t.Fatalf("the client's selected candidate is %+v, want relay over TCP", c.Local)
		}
	})
	t.Run("all of 443 open", func(t *testing.T) {
		lab.firewall(fw443)
		c, _ := fw.call(t)
		if c.Local.Type != "relay" || c.Local.RelayProtocol != "tcp" && c.Local.RelayProtocol != "tls" {
			t.Fatalf("the client's selected candidate is %+v, want relay over TCP or TLS", c.Local)
		}
		t.Logf("with both on 443 the client chose relay over %s (ICE prefers TCP to TLS relays)", c.Local.RelayProtocol)
	})
	t.Run("Chromium", func(t *testing.T) {
		lab.firewall(fwTLSOnly)
		fw.chromiumCall(t, cert, cfg)
	})
}

// fwEnv is the firewall test's Ferry in the lab.
type fwEnv struct {
	t      *testing.T
	lab    *netLab
	p      *ferryProc
	ca     string
	apiKey string
}

// checkFromClient runs ferry check in the client namespace against each of Ferry's TURN
// URLs and compares what passed with want ("udp 3478": false, ...).
func (e *fwEnv) checkFromClient(t *testing.T, want map[string]bool) {
	t.Helper()
	urls := map[string]string{
		"udp 3478": "turn:" + labServerIP + ":3478?transport=udp", "tcp 3478": "turn:" + labServerIP + ":3478?transport=tcp",
		"tcp 443": "turn:" + labServerIP + ":443?transport=tcp", "tls 443": "turns:" + labServerIP + ":443?transport=tcp",
	}
	args := []string{"check", "--json", "--timeout", "2s", "--ca", e.ca, "--secret-file", filepath.Join(e.p.dataDir, "turn-secret")}
	for _, k := range []string{"udp 3478", "tcp 3478", "tcp 443", "tls 443"} {
		args = append(args, urls[k])
	}
	start := time.Now()
	out, _ := e.lab.command(labClient, ferryBinary(t), args...).Output()
	var rep check.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("ferry check --json: %v\n%s", err, out)
	}
	for k, u := range urls {
		for _, r := range rep.Results {
			if r.URL == u && r.OK != want[k] {
				t.Errorf("ferry check from behind the firewall: %s passed %t, want %t (%s)", k, r.OK, want[k], r.Failure)
			}
			if r.URL == u {
				t.Logf("ferry check %s: ok %t %s", k, r.OK, r.Failure)
			}
		}
	}
	t.Logf("ferry check from the client took %s", time.Since(start).Round(time.Millisecond))
}

// call runs a pion/webrtc call from the client (offerer) to the far side, each with ICE
// servers that an app's backend fetched from Ferry's endpoint, and returns both sides'
// reports after checking that it connected and every RTP packet and message arrived.
func (e *fwEnv) call(t *testing.T) (client, far helperResult) {
	t.Helper()
	ice := func(user string) string {
		h := e.lab.startHelper(t, labFar, helperFetch, "FERRY_FW_CA="+e.ca, "FERRY_FW_KEY="+e.apiKey,
			"FERRY_FW_URL=https://"+labServerIP+"/v1/ice-servers?user="+user)
		return h.next(t, "iceservers", 20*time.Second)
	}
	patient, doctor := ice("patient"), ice("doctor")
	start := time.Now()
	// pion verifies turns: certificates against the system's roots: Go reads them from
	// SSL_CERT_FILE, here the lab's CA.
	offer := e.lab.startHelper(t, labClient, helperOffer, "FERRY_FW_CONFIG="+patient, "SSL_CERT_FILE="+e.ca)
	answer := e.lab.startHelper(t, labFar, helperAnswer, "FERRY_FW_CONFIG="+doctor, "SSL_CERT_FILE="+e.ca)
	go offer.pump(answer)
	go answer.pump(offer)
	for _, r := range []struct {
		h   *helperProc
		out *helperResult
	}{{offer, &client}, {answer, &far}} {
		select {
		case line := <-r.h.result:
			if err := json.Unmarshal([]byte(line), r.out); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
		case <-time.After(90 * time.Second):
			_ = r.h.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines' stacks, for the log
			select {
			case <-r.h.done:
			case <-time.After(3 * time.Second):
			}
			t.Fatalf("no result from the %s helper within 90 s:\n%s", r.h.role, r.h.stderr.String())
		}
	}
	// While the call is up: the client's only connections go to Ferry's port 443.
	ss, _ := e.lab.run(labClient, "ss", "-Htn", "state", "established")
	offer.close()
	answer.close()
	t.Logf("client: %+v\nfar: %+v\nclient's TCP connections:\n%s(call took %s)", client, far, ss, time.Since(start).Round(time.Millisecond))
	for name, r := range map[string]helperResult{"client": client, "far side": far} {
		if !r.Connected || r.Error != "" || r.RTPReceived != helperRTPPackets {
			t.Errorf("%s: connected %t, %d of %d RTP packets, error %q", name, r.Connected, r.RTPReceived, helperRTPPackets, r.Error)
		}
	}
	if far.DCReceived != helperDCMessages {
		t.Errorf("far side: %d of %d data-channel messages", far.DCReceived, helperDCMessages)
	}
	for _, line := range strings.Split(strings.TrimSpace(ss), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[3] != labServerIP+":443" {
			t.Errorf("the client has a connection to %s, not to %s:443", f[3], labServerIP)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return client, far
}

// chromiumCall runs the consultation in headless Chromium: the patient in the client
// namespace behind the firewall, the doctor on the far side; the patient's call must go
// through a relay candidate over TLS 443 and both must decode frames. Then the patient
// opens a check link: the /check page shows only TLS on 443 getting through.
func (e *fwEnv) chromiumCall(t *testing.T, cert, cfg string) {
	t.Helper()
	pin := spkiPin(t, cert)
	env := &pageEnv{p: e.p, base: "https://" + labServerIP, spki: pin, cfg: cfg}
	hostLink, guestLink := env.room(t)
	start := time.Now()
	guest := openTab(t, "patient", browserOpts{spki: pin, wrap: e.lab.wrap(labClient), resolverExclude: []string{labServerIP}})
	host := openTab(t, "doctor", browserOpts{spki: pin, wrap: e.lab.wrap(labFar), resolverExclude: []string{labServerIP}, width: 1024, height: 768})
	host.navigate(hostLink)
	guest.navigate(guestLink)
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`window.__gum && window.__gum.length > 0 && document.getElementById('media-status').textContent !== ''`, 20*time.Second, "media ready")
	}
	admit(t, host, guest)
	gs := guest.waitMedia(40*time.Second, false, true)
	hs := host.waitMedia(40*time.Second, false, true)
	t.Logf("patient (behind the firewall): %+v\ndoctor: %+v\n(browsers started and connected in %s)", gs, hs, time.Since(start).Round(time.Millisecond))
	if gs.Local != "relay" || gs.RelayProtocol != "tls" {
		t.Fatalf("the patient's selected candidate is %s over %q, want relay over tls", gs.Local, gs.RelayProtocol)
	}

	cmd := exec.Command(ferryBinary(t), "check-link", "--json", "--ttl", "1h", "--config", cfg, "--data-dir", e.p.dataDir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ferry check-link: %v\n%s", err, out)
	}
	var link signaling.CheckLink
	if err := json.Unmarshal(out, &link); err != nil {
		t.Fatal(err)
	}
	guest.click("hangup")
	guest.navigate(link.URL)
	guest.waitJS(`document.body.dataset.state === 'done'`, 30*time.Second, "the check page finished")
	got, err := evalJS[map[string]string](guest, `Object.fromEntries([...document.querySelectorAll('#rows tr')].map((r) => [r.dataset.transport + ' ' + r.dataset.port, r.dataset.ok]))`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"udp 3478": "false", "tcp 3478": "false", "tcp 443": "false", "tls 443": "true"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("check page behind the firewall: %s %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	report := guest.eval(`document.querySelector('[data-testid=report]').textContent`)
	t.Logf("the check page's report from behind the firewall:\n%s", report)
}

// spkiPin returns the base64 SHA-256 of a PEM certificate's public key, for Chromium's
// --ignore-certificate-errors-spki-list.
func spkiPin(t *testing.T, certFile string) string {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// helperProc is a helper process (TestFirewallHelper) running in the lab.
type helperProc struct {
	role   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan string
	result chan string // the result of a call (pump)
	stderr *syncBuffer
	done   chan struct{}
}

// pump forwards a call helper's signaling (offer, answer, candidates) to the other one, and
// its result to h.result, until it ends.
func (h *helperProc) pump(to *helperProc) {
	for line := range h.lines {
		kind, payload, _ := strings.Cut(line, " ")
		switch kind {
		case "offer", "answer", "candidate":
			_, _ = io.WriteString(to.in, line+"\n")
		case "result":
			h.result <- payload
		default:
			_, _ = h.stderr.Write([]byte("unexpected message: " + line + "\n"))
		}
	}
}

// startHelper runs this test binary as role's helper in the namespace of lab role ns.
func (l *netLab) startHelper(t *testing.T, ns, role string, env ...string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &helperProc{role: role, lines: make(chan string, 64), result: make(chan string, 1), stderr: &syncBuffer{}, done: make(chan struct{})}
	h.cmd = l.command(ns, exe, "-test.run=^TestFirewallHelper$", "-test.count=1")
	h.cmd.Env = append(append(os.Environ(), "FERRY_FW_HELPER="+role), env...)
	h.cmd.Stderr = h.stderr
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.track(h.cmd.Process)
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), helperMark); ok {
				h.lines <- line
			} else {
				_, _ = h.stderr.Write([]byte(sc.Text() + "\n"))
			}
		}
	}()
	go func() { _ = h.cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		h.close()
		if t.Failed() {
			t.Logf("%s helper (%s) output:\n%s", role, ns, h.stderr.String())
		}
	})
	return h
}

// next returns the payload of the helper's next message, which must be of kind.
func (h *helperProc) next(t *testing.T, kind string, timeout time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-h.lines:
		if !ok {
			t.Fatalf("helper ended before its %s:\n%s", kind, h.stderr.String())
		}
		k, payload, _ := strings.Cut(line, " ")
		if k != kind {
			t.Fatalf("helper sent %s %.300s, want %s\n%s", k, payload, kind, h.stderr.String())
		}
		return payload
	case <-time.After(timeout):
		t.Fatalf("no %s from the helper within %s:\n%s", kind, timeout, h.stderr.String())
	}
	return ""
}

// close ends the helper (its stdin first; killed if it lingers) and waits for it.
func (h *helperProc) close() {
	_ = h.in.Close()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}
