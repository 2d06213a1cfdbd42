package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The harness of the browser tests (shared/cases/browser-cases.md): Ferry's real binary on
// loopback with TURN over UDP, TCP and TLS, one headless Chromium per participant with fake
// devices and a fresh profile, kept off the network (shared/notes/chromium.md), the
// recording init script (testdata/wrapper.js) and a spy on WebSocket frames and requests.

//go:embed testdata/wrapper.js
var wrapperJS string

// chromiumPath finds Debian's real Chromium binary (not the /usr/bin wrapper script).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test (-short)")
	}
	for _, p := range []string{"/usr/lib/chromium/chromium", "chromium", "chromium-browser"} {
		if found, err := exec.LookPath(p); err == nil {
			return found
		}
	}
	t.Skip("chromium is not installed and could not be installed: make test-deps (apt-get install chromium) installs it")
	return ""
}

// pageEnv is a Ferry serving rooms and the consultation page, with its TLS test key's pin.
type pageEnv struct {
	p    *ferryProc
	base string // http://127.0.0.1:<http port>
	spki string // base64 SHA-256 of the TURN certificate's public key, for Chromium
	cfg  string
	yaml string
}

// turnCert writes a self-signed certificate for 127.0.0.1 and returns its files and pin.
func turnCert(t *testing.T) (cert, key, spki string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "turn.pem"), filepath.Join(dir, "turn.key")
	kb, _ := x509.MarshalECPrivateKey(k)
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, base64.StdEncoding.EncodeToString(sum[:])
}

// startPageFerry runs Ferry for the page: HTTP on 127.0.0.1, TURN on the given transports
// (udp, tcp, tls; all three by default), relay on loopback, plus extra YAML under rooms:.
func startPageFerry(t *testing.T, rooms string, transports ...string) *pageEnv {
	t.Helper()
	if len(transports) == 0 {
		transports = []string{"udp", "tcp", "tls"}
	}
	on := map[string]string{"udp": "[]", "tcp": "[]", "tls": "[]"}
	for _, tr := range transports {
		on[tr] = `["127.0.0.1:0"]`
	}
	cert, key, spki := turnCert(t)
	yaml := fmt.Sprintf(`server:
  public_host: 127.0.0.1
turn:
  udp_listen: %s
  tcp_listen: %s
  tls_listen: %s
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
http:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
rooms:
%s
`, on["udp"], on["tcp"], on["tls"], cert, key, rooms)
	p := startFerry(t, yaml)
	return &pageEnv{p: p, base: fmt.Sprintf("http://127.0.0.1:%d", p.httpPort), spki: spki,
		cfg: filepath.Join(filepath.Dir(p.dataDir), "ferry.yaml"), yaml: yaml}
}

// room creates a consultation with `ferry room create --json` (as a practitioner does) and
// returns its host and guest links, pointed at this Ferry's HTTP port.
func (e *pageEnv) room(t *testing.T, args ...string) (host, guest string) {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), append([]string{"room", "create", "--json", "--ttl", "30m",
		"--config", e.cfg, "--data-dir", e.p.dataDir}, args...)...)
	cmd.Env = append(os.Environ(), "FERRY_HTTP_LISTEN=127.0.0.1:0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ferry room create: %v\n%s", err, out)
	}
	var links struct {
		Links struct{ Host, Guest string }
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("ferry room create --json: %v\n%s", err, out)
	}
	fix := func(link string) string {
		i := strings.Index(link, "/r/")
		if i < 0 {
			t.Fatalf("link %q has no /r/", link)
		}
		return e.base + link[i:]
	}
	return fix(links.Links.Host), fix(links.Links.Guest)
}

// browserOpts are a participant's browser.
type browserOpts struct {
	lang           string // Accept-Language, e.g. "de-DE"; "en-US" by default
	width, height  int    // window; a phone in portrait by default (390x844)
	strictAutoplay bool   // no autoplay without a user gesture (B11 d)
	spki           string // pin for the TURN test certificate
	init           string // an extra init script before the wrapper (hooks)
	permissions    bool   // capture permissions come from Browser.setPermission, not the fake UI
	// wrap runs Chromium through a command prefix that execs it (`ip netns exec NAME`), and
	// resolverExclude adds addresses to the resolver rule's EXCLUDEs (TURN over TCP and TLS
	// need the TURN server's: shared/notes/chromium.md).
	wrap            []string
	resolverExclude []string
}

// tab is one participant's Chromium with the recorder, the WebSocket spy and the request log.
type tab struct {
	t      *testing.T
	name   string
	ctx    context.Context
	out    *syncBuffer
	mu     sync.Mutex
	sent   []string // WebSocket text frames the page sent
	recv   []string // and received
	recvAt []time.Time
	urls   []string // every request URL
	errors []string // console.error and console.warn
}

var browserFlags = []chromedp.ExecAllocatorOption{
	chromedp.Flag("headless", "new"),
	chromedp.NoSandbox,
	chromedp.Flag("use-fake-device-for-media-stream", true),
	chromedp.Flag("mute-audio", true),
	chromedp.Flag("disable-background-networking", true),
	chromedp.Flag("disable-component-update", true),
	chromedp.Flag("disable-sync", true),
	chromedp.Flag("no-first-run", true),
	chromedp.Flag("disable-quic", true),
	chromedp.Flag("no-proxy-server", true),
	chromedp.Flag("no-pings", true),
	chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
	chromedp.Flag("enable-logging", "stderr"),
}

// openTab starts a Chromium for one participant; the test's cleanup ends it (and every
// process it started, by chromedp's context cancel).
func openTab(t *testing.T, name string, o browserOpts) *tab {
	t.Helper()
	exe := chromiumPath(t)
	o.lang = cmpOr(o.lang, "en-US")
	if o.width == 0 {
		o.width, o.height = 390, 844
	}
	tb := &tab{t: t, name: name, out: &syncBuffer{}}
	opts := append([]chromedp.ExecAllocatorOption{chromedp.ExecPath(exe), chromedp.WindowSize(o.width, o.height),
		chromedp.Flag("lang", o.lang), chromedp.Flag("accept-lang", o.lang), chromedp.CombinedOutput(tb.out)}, browserFlags...)
	if !o.permissions {
		opts = append(opts, chromedp.Flag("use-fake-ui-for-media-stream", true))
	}
	if o.strictAutoplay {
		opts = append(opts, chromedp.Flag("autoplay-policy", "document-user-activation-required"))
	} else {
		opts = append(opts, chromedp.Flag("autoplay-policy", "no-user-gesture-required"))
	}
	if o.spki != "" {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", o.spki))
	}
	if len(o.resolverExclude) > 0 {
		opts = append(opts, chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE "+strings.Join(o.resolverExclude, ", EXCLUDE ")))
	}
	if len(o.wrap) > 0 {
		wrap := o.wrap
		opts = append(opts, chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append(append(append([]string(nil), wrap...), cmd.Path), cmd.Args[1:]...)
			cmd.Path = wrap[0]
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // as chromedp's own default
		}))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 6*time.Minute)
	tb.ctx = ctx
	t.Cleanup(func() {
		if t.Failed() {
			tb.dumpOnFailure()
		}
		cancelTime()
		cancelCtx()
		cancelAlloc() // waits until the browser and its children have exited
	})
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("%s: start chromium: %v\n%s", name, err, tb.out.String())
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{o.init, wrapperJS} {
		if src == "" {
			continue
		}
		if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: src}); err != nil {
			t.Fatal(err)
		}
	}
	tb.listen()
	return tb
}

// listen records the tab's WebSocket frames, requests and console errors until it closes.
func (tb *tab) listen() {
	go func() {
		for ev, err := range chromedp.Events(tb.ctx, network.WebSocketFrameSent) {
			if err != nil {
				return
			}
			tb.add(&tb.sent, string(ev.Response.PayloadData))
		}
	}()
	go func() {
		for ev, err := range chromedp.Events(tb.ctx, network.WebSocketFrameReceived) {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.recv = append(tb.recv, string(ev.Response.PayloadData))
			tb.recvAt = append(tb.recvAt, time.Now())
			tb.mu.Unlock()
		}
	}()
	go func() {
		for ev, err := range chromedp.Events(tb.ctx, network.RequestWillBeSent) {
			if err != nil {
				return
			}
			tb.add(&tb.urls, ev.Request.URL)
		}
	}()
	go func() {
		for ev, err := range chromedp.Events(tb.ctx, runtime.ConsoleAPICalled) {
			if err != nil {
				return
			}
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				tb.add(&tb.errors, string(ev.Type)+": "+strings.Join(parts, " "))
			}
		}
	}()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (tb *tab) add(list *[]string, s string) {
	tb.mu.Lock()
	*list = append(*list, s)
	tb.mu.Unlock()
}

func (tb *tab) snapshot(list *[]string) []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), *list...)
}

// received returns the messages the page received with their arrival times.
func (tb *tab) received() ([]map[string]any, []time.Time) {
	tb.mu.Lock()
	raw, at := append([]string(nil), tb.recv...), append([]time.Time(nil), tb.recvAt...)
	tb.mu.Unlock()
	out := make([]map[string]any, len(raw))
	for i, f := range raw {
		_ = json.Unmarshal([]byte(f), &out[i])
	}
	return out, at
}

// waitReceived waits until the page has received a message for which match is true, and
// returns it.
func (tb *tab) waitReceived(timeout time.Duration, what string, match func(map[string]any) bool) map[string]any {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, _ := tb.received()
		for i := len(msgs) - 1; i >= 0; i-- {
			if match(msgs[i]) {
				return msgs[i]
			}
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("%s: no %s within %s", tb.name, what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// frames returns the decoded WebSocket messages the page sent (sent) or received.
func (tb *tab) frames(sent bool) []map[string]any {
	list := &tb.recv
	if sent {
		list = &tb.sent
	}
	var out []map[string]any
	for _, f := range tb.snapshot(list) {
		var m map[string]any
		if json.Unmarshal([]byte(f), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (tb *tab) dumpOnFailure() {
	log, _ := evalJS[any](tb, `({log: (window.__log||[]).slice(-60), errs: window.__errs, sends: window.__sends, gum: window.__gum})`)
	b, _ := json.Marshal(log)
	var keep []string
	for _, line := range strings.Split(tb.out.String(), "\n") {
		if !strings.Contains(line, "dbus") && !strings.Contains(line, "capture_device_ranking") {
			keep = append(keep, line)
		}
	}
	out := strings.Join(keep, "\n")
	if len(out) > 4000 {
		out = out[len(out)-4000:]
	}
	tb.t.Logf("%s: page state %s\nconsole: %q\nchromium log tail:\n%s", tb.name, b, tb.snapshot(&tb.errors), out)
}

func (tb *tab) navigate(url string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.Navigate(url)); err != nil {
		tb.t.Fatalf("%s: navigate: %v", tb.name, err)
	}
}

// evalJS evaluates expression (awaiting a promise) and decodes its value.
func evalJS[T any](tb *tab, expression string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expression, chromedp.EvalAwaitPromise))
}

func (tb *tab) eval(expression string) any {
	tb.t.Helper()
	v, err := evalJS[any](tb, expression)
	if err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.name, expression, err)
	}
	return v
}

// waitJS polls expression until it is truthy, failing the test after timeout.
func (tb *tab) waitJS(expression string, timeout time.Duration, what string) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	var last any
	for {
		v, err := evalJS[any](tb, `(async () => !!(`+expression+`))()`)
		if err == nil && v == true {
			return
		}
		last = v
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("%s: %s: not within %s (last: %v)", tb.name, what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// click is a trusted click (Input.dispatchMouseEvent) on the element with data-testid.
func (tb *tab) click(testid string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="`+testid+`"]`), chromedp.NodeVisible)); err != nil {
		tb.t.Fatalf("%s: click %s: %v", tb.name, testid, err)
	}
}

// jsClick is element.click() from script: no user activation.
func (tb *tab) jsClick(selector string) {
	tb.t.Helper()
	tb.eval(fmt.Sprintf(`document.querySelector(%q).click()`, selector))
}

// screenshot saves the window as PNG into dir and prints its path.
func (tb *tab) screenshot(dir, name string) string {
	tb.t.Helper()
	tb.eval(`window.scrollTo(0, 0)`)
	buf, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("%s: screenshot: %v", tb.name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot %s: %s", name, path)
	return path
}

// setFile puts path into the page's file input (DOM.setFileInputFiles), as a user choosing it.
func (tb *tab) setFile(path string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.SetUploadFiles(chromedp.CSS(`[data-testid="file-input"]`), []string{path})); err != nil {
		tb.t.Fatalf("%s: choose file: %v", tb.name, err)
	}
}

// download clicks the receiver's download link (trusted) and returns the SHA-256 of the file
// the browser saved, as a patient or practitioner would get it.
func (tb *tab) download(name string) string {
	tb.t.Helper()
	dir := tb.t.TempDir()
	if _, err := chromedp.CallBrowser(tb.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir}); err != nil {
		tb.t.Fatalf("%s: downloads: %v", tb.name, err)
	}
	tb.click("file-download")
	path := filepath.Join(dir, name)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path + ".crdownload"); err != nil {
			if b, err := os.ReadFile(path); err == nil {
				return sha256Hex(b)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	entries, _ := os.ReadDir(dir)
	tb.t.Fatalf("%s: no download %s in %s (%v)", tb.name, name, dir, entries)
	return ""
}

// setPermission sets a capture permission for origin in this participant's browser.
func (tb *tab) setPermission(origin, name string, granted bool) {
	tb.t.Helper()
	setting := browser.PermissionSettingDenied
	if granted {
		setting = browser.PermissionSettingGranted
	}
	if _, err := chromedp.CallBrowser(tb.ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: name}, Setting: setting, Origin: origin}); err != nil {
		tb.t.Fatalf("%s: set permission %s: %v", tb.name, name, err)
	}
}

// callStats reads getStats() of the page's live PeerConnections (those with a remote
// description): the selected pair, decoded video frames (per mid) and received audio.
const callStatsJS = `(async () => {
  const out = [];
  for (const pc of window.__pcs.filter((p) => p.signalingState !== 'closed' && p.remoteDescription)) {
    const s = await pc.getStats();
    const r = { conn: pc.connectionState, sig: pc.signalingState, local: '', remote: '', relayProtocol: '', frames: 0, audioBytes: 0, samples: 0, byMid: {}, outVideo: 0, outAudio: 0 };
    let pair = null;
    s.forEach((x) => { if (x.type === 'transport' && x.selectedCandidatePairId) pair = s.get(x.selectedCandidatePairId); });
    if (pair) {
      const l = s.get(pair.localCandidateId) || {}, rm = s.get(pair.remoteCandidateId) || {};
      r.local = l.candidateType || ''; r.remote = rm.candidateType || ''; r.relayProtocol = l.relayProtocol || '';
    }
    s.forEach((x) => {
      if (x.type === 'inbound-rtp' && x.kind === 'video') { r.frames += x.framesDecoded || 0; r.byMid[x.mid] = x.framesDecoded || 0; }
      if (x.type === 'inbound-rtp' && x.kind === 'audio') { r.audioBytes += x.bytesReceived || 0; r.samples += x.totalSamplesReceived || 0; }
      if (x.type === 'outbound-rtp' && x.kind === 'video') r.outVideo += x.bytesSent || 0;
      if (x.type === 'outbound-rtp' && x.kind === 'audio') r.outAudio += x.bytesSent || 0;
    });
    r.mids = pc.getTransceivers().map((t) => t.mid);
    out.push(r);
  }
  return out;
})()`

type pcStats struct {
	Conn, Sig, Local, Remote, RelayProtocol string
	Frames, AudioBytes, Samples             float64
	OutVideo, OutAudio                      float64
	ByMid                                   map[string]float64
	Mids                                    []any
}

func (tb *tab) stats() []pcStats {
	tb.t.Helper()
	raw, err := evalJS[[]byte](tb, callStatsJS)
	if err != nil {
		tb.t.Fatalf("%s: getStats: %v", tb.name, err)
	}
	var s []pcStats
	if err := json.Unmarshal(raw, &s); err != nil {
		tb.t.Fatalf("%s: stats %s: %v", tb.name, raw, err)
	}
	return s
}

// waitMedia waits until the page has one live PeerConnection whose selected pair is relayed
// (when relay) and that decodes video and receives audio, both growing; it returns the
// last stats.
func (tb *tab) waitMedia(timeout time.Duration, relay, audio bool) pcStats {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	var first *pcStats
	var last []pcStats
	for time.Now().Before(deadline) {
		last = tb.stats()
		if len(last) == 1 {
			s := last[0]
			ok := s.Conn == "connected" && s.Frames > 0 && (!audio || s.AudioBytes > 0) &&
				(!relay || s.Local == "relay" && s.Remote == "relay")
			if ok && first == nil {
				first = &s
			} else if ok && s.Frames > first.Frames && (!audio || s.AudioBytes > first.AudioBytes) {
				return s
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	tb.t.Fatalf("%s: no media within %s: %+v", tb.name, timeout, last)
	return pcStats{}
}

// waitScreen waits until the page decodes at least n frames of a video other than the
// camera's (mids 0 and 1 are audio and camera): a shared screen.
func (tb *tab) waitScreen(n float64, timeout time.Duration) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	var last []pcStats
	for time.Now().Before(deadline) {
		if last = tb.stats(); len(last) == 1 {
			for mid, f := range last[0].ByMid {
				if mid != "0" && mid != "1" && f >= n {
					return
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	tb.t.Fatalf("%s: fewer than %v frames of a shared screen within %s: %+v", tb.name, n, timeout, last)
}

// errs returns window.__errs (errors, rejections, CSP violations).
func (tb *tab) errs() []any {
	tb.t.Helper()
	v, _ := tb.eval(`window.__errs`).([]any)
	return v
}

// admit runs the waiting room: the guest joins and knocks, the host admits it.
func admit(t *testing.T, host, guest *tab) {
	t.Helper()
	host.click("join")
	host.waitJS(`document.body.dataset.view === 'call'`, 15*time.Second, "host in the call view")
	guest.click("join")
	guest.waitJS(`document.body.dataset.view === 'waiting'`, 15*time.Second, "guest in the waiting room")
	host.waitJS(`document.querySelector('[data-testid=knock] [data-testid=admit]')`, 15*time.Second, "a knock")
	host.click("admit")
	guest.waitJS(`document.body.dataset.view === 'call'`, 15*time.Second, "guest admitted")
}

// openPair opens the host and guest links in two browsers, ready to join.
func openPair(t *testing.T, e *pageEnv, host, guest string, ho, gho browserOpts) (*tab, *tab) {
	t.Helper()
	ho.spki, gho.spki = e.spki, e.spki
	if ho.width == 0 {
		ho.width, ho.height = 1024, 768
	}
	h := openTab(t, "host", ho)
	g := openTab(t, "guest", gho)
	h.navigate(host)
	g.navigate(guest)
	for _, tb := range []*tab{h, g} {
		tb.waitJS(`window.__gum && window.__gum.length > 0 && document.getElementById('media-status').textContent !== ''`, 15*time.Second, "media ready")
	}
	return h, g
}

func checkRelayOnly(t *testing.T, tabs ...*tab) {
	t.Helper()
	for _, tb := range tabs {
		tb.eval(`(() => { const b = document.querySelector('[data-testid=relay-only]'); if (!b.checked) b.click(); return b.checked; })()`)
	}
}

// noErrs fails when a page recorded an error, a rejection or a CSP violation.
func noErrs(t *testing.T, tabs ...*tab) {
	t.Helper()
	for _, tb := range tabs {
		if e := tb.errs(); len(e) > 0 {
			t.Errorf("%s: page errors: %v", tb.name, e)
		}
	}
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%x", sum[:])
}

var _ = bytes.Equal
