package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// waitLog waits until p's log holds substr at least n times.
func waitLog(t *testing.T, p *ferryProc, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.log.String(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q %d time(s):\n%s", substr, n, p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue scrapes the admin listener for one series ("ferry_draining", or with labels).
func metricValue(t *testing.T, p *ferryProc, series string) float64 {
	t.Helper()
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.adminPort))
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no series %s in the scrape", series)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// restCred mints a TURN REST credential with secret, as a web app's backend does.
func restCred(secret, user string) (username, password string) {
	username = strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":" + user
	return username, auth.RESTPassword(secret, username)
}

// turnClient is a pion TURN client on its own UDP socket.
type turnClient struct {
	*turn.Client
	conn               net.PacketConn
	server             net.Addr
	username, password string
}

func newTurnClient(t *testing.T, p *ferryProc, username, password string) *turnClient {
	t.Helper()
	return newTurnClientRealm(t, p, username, password, "ferry")
}

func newTurnClientRealm(t *testing.T, p *ferryProc, username, password, realm string) *turnClient {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("127.0.0.1:%d", p.udpPort)
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: username, Password: password, Realm: realm, LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	addr, _ := net.ResolveUDPAddr("udp4", server)
	return &turnClient{Client: c, conn: conn, server: addr, username: username, password: password}
}

// refresh sends a Refresh for the client's allocation with its own credentials (a 401
// challenge first, as a client starting a fresh transaction does) and returns the error
// code, 0 for success.
func (c *turnClient) refresh(t *testing.T, lifetime uint32) int {
	t.Helper()
	lt := stun.RawAttribute{Type: stun.AttrLifetime, Value: binary.BigEndian.AppendUint32(nil, lifetime)}
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lt, stun.Fingerprint)
	res, err := c.PerformTransaction(m, c.server, false)
	if err != nil {
		t.Fatalf("refresh challenge: %v", err)
	}
	var nonce stun.Nonce
	var realm stun.Realm
	if nonce.GetFrom(res.Msg) != nil || realm.GetFrom(res.Msg) != nil {
		t.Fatalf("refresh without credentials: no challenge (%v)", res.Msg)
	}
	m = stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lt,
		stun.NewUsername(c.username), realm, nonce, stun.NewLongTermIntegrity(c.username, realm.String(), c.password), stun.Fingerprint)
	if res, err = c.PerformTransaction(m, c.server, false); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if res.Msg.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	_ = ec.GetFrom(res.Msg)
	return int(ec.Code)
}

// stream is a steady flow of numbered datagrams through an allocation to an echo peer and
// back, like a call's audio: one packet every interval.
type stream struct {
	relay    net.PacketConn
	peer     net.Addr
	mu       sync.Mutex
	sent     int
	echoed   map[uint32]bool
	stop     chan struct{}
	wg       sync.WaitGroup
	writeErr error
}

func startStream(relay net.PacketConn, peer net.Addr, interval time.Duration) *stream {
	s := &stream{relay: relay, peer: peer, echoed: map[uint32]bool{}, stop: make(chan struct{})}
	s.wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := relay.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 4 {
				s.mu.Lock()
				s.echoed[binary.BigEndian.Uint32(buf)] = true
				s.mu.Unlock()
			}
		}
	})
	s.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		pkt := make([]byte, 160) // an Opus frame's size
		for seq := uint32(0); ; seq++ {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			binary.BigEndian.PutUint32(pkt, seq)
			if _, err := relay.WriteTo(pkt, peer); err != nil {
				s.mu.Lock()
				s.writeErr = err
				s.mu.Unlock()
				return
			}
			s.mu.Lock()
			s.sent++
			s.mu.Unlock()
		}
	})
	return s
}

// counts returns the datagrams sent and echoed so far.
func (s *stream) counts() (sent, echoed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent, len(s.echoed)
}

// finish stops sending, waits for the last echoes and returns sent and echoed.
func (s *stream) finish(t *testing.T) (sent, echoed int) {
	t.Helper()
	close(s.stop)
	deadline := time.Now().Add(3 * time.Second)
	for {
		sent, echoed = s.counts()
		if echoed >= sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	err := s.writeErr
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("stream write: %v", err)
	}
	return sent, echoed
}

const opsSecretOld = "old-secret-0123456789abcdef"
const opsSecretNew = "new-secret-fedcba9876543210"

// opsConfig is a relay on loopback with an admin listener, the secrets in secretsFile and
// extra YAML appended.
func opsConfig(secretsFile, extra string) string {
	return fmt.Sprintf(`turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
relay:
  bind_ip: 127.0.0.1
  allowed_peers: [127.0.0.2/32]
admin:
  listen: "127.0.0.1:0"
auth:
  secrets_file: %s
%s`, secretsFile, extra)
}

// SIGHUP while a pion client relays a steady stream: not one datagram is lost over three
// reloads: a secret rotation, an invalid configuration (refused, counted, the old one kept)
// and the removal of the old secret. Afterwards the allocation made with the old secret
// still refreshes, a new Allocate needs the new secret, and the reloads are counted.
func TestReloadWithoutDroppingACall(t *testing.T) {
	dir := t.TempDir()
	secrets, cfg := filepath.Join(dir, "secrets"), filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(secrets, []byte(opsSecretOld+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startFerryAt(t, cfg, filepath.Join(dir, "data"), opsConfig(secrets, ""))
	echo := startEcho(t)

	oldUser, oldPass := restCred(opsSecretOld, "alice")
	a := newTurnClient(t, p, oldUser, oldPass)
	relayConn, err := a.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relayConn.Close()
	s := startStream(relayConn, echo.LocalAddr(), 4*time.Millisecond)
	waitSent := func(n int) {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if sent, _ := s.counts(); sent >= n {
				return
			}
		}
		t.Fatal("the stream stalled")
	}
	hup := func() { _ = p.cmd.Process.Signal(syscall.SIGHUP) }

	waitSent(100)
	// 1. Rotation: the new secret first, the old one still listed.
	os.WriteFile(secrets, []byte(opsSecretNew+"\n"+opsSecretOld+"\n"), 0o600)
	hup()
	waitLog(t, p, "configuration reloaded", 1)
	newUser, newPass := restCred(opsSecretNew, "bob")
	b := newTurnClient(t, p, newUser, newPass)
	if rc, err := b.Allocate(); err != nil {
		t.Fatalf("allocate with the new secret: %v", err)
	} else {
		rc.Close()
	}
	waitSent(300)

	// 2. A broken configuration: refused whole, every problem logged, the failure counted.
	os.WriteFile(cfg, []byte(opsConfig(secrets, "relay_typo: 1\nlog:\n  level: loud\n")), 0o600)
	hup()
	waitLog(t, p, "reload failed: the running configuration stays", 1)
	waitLog(t, p, `reload: log.level: \"loud\" is not debug, info, warn or error`, 1)
	waitLog(t, p, "reload: unknown top-level key relay_typo", 1)
	if v := metricValue(t, p, `ferry_config_reloads_total{result="failure"}`); v != 1 {
		t.Fatalf("failed reloads counted: %v", v)
	}
	if v := metricValue(t, p, "ferry_config_last_reload_successful"); v != 0 {
		t.Fatal("ferry_config_last_reload_successful must say the last reload failed")
	}
	c := newTurnClient(t, p, newUser, newPass)
	if rc, err := c.Allocate(); err != nil {
		t.Fatalf("the running configuration must stay after a refused reload: %v", err)
	} else {
		rc.Close()
	}
	waitSent(500)

	// 3. The old secret removed.
	os.WriteFile(cfg, []byte(opsConfig(secrets, "")), 0o600)
	os.WriteFile(secrets, []byte(opsSecretNew+"\n"), 0o600)
	hup()
	waitLog(t, p, "configuration reloaded", 2)
	waitSent(700)

	sent, echoed := s.finish(t)
	if echoed != sent || sent < 700 {
		t.Fatalf("%d of %d datagrams came back across three reloads: a reload must not lose one", echoed, sent)
	}
	// The allocation keeps the key it was made with: its credentials still refresh.
	if code := a.refresh(t, 600); code != 0 {
		t.Fatalf("refresh with the old credentials after the old secret was removed: %d", code)
	}
	oldUser2, oldPass2 := restCred(opsSecretOld, "carol")
	if rc, err := newTurnClient(t, p, oldUser2, oldPass2).Allocate(); err == nil {
		rc.Close()
		t.Fatal("a new Allocate with the removed secret must be refused")
	}
	if v := metricValue(t, p, `ferry_config_reloads_total{result="success"}`); v != 2 {
		t.Fatalf("successful reloads counted: %v", v)
	}
	if v := metricValue(t, p, "ferry_config_last_reload_successful"); v != 1 {
		t.Fatal("ferry_config_last_reload_successful after a good reload")
	}
	if strings.Contains(p.log.String(), opsSecretNew) || strings.Contains(p.log.String(), opsSecretOld) {
		t.Fatal("a secret reached the log")
	}
}

// A reload that points TURN at new certificate files: new TLS connections get the new
// certificate, a connection opened before keeps working, and ferry reload (through the admin
// listener) prints the outcome, every problem included when it is refused.
func TestReloadedCertificateReachesNewConnections(t *testing.T) {
	certA, keyA, _ := writeTestCert(t)
	certB, keyB, _ := writeTestCert(t)
	dir := t.TempDir()
	secrets, cfg := filepath.Join(dir, "secrets"), filepath.Join(dir, "ferry.yaml")
	os.WriteFile(secrets, []byte(opsSecretOld+"\n"), 0o600)
	yamlFor := func(cert, key string) string {
		return fmt.Sprintf(`turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: []
  tls_listen: ["127.0.0.1:0"]
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
admin:
  listen: "127.0.0.1:0"
auth:
  secrets_file: %s
`, cert, key, secrets)
	}
	p := startFerryAt(t, cfg, filepath.Join(dir, "data"), yamlFor(certA, keyA))
	served := func() []byte {
		t.Helper()
		conn, err := tlsDial(p.tlsPort)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	if !pemEqual(t, certA, served()) {
		t.Fatal("not serving the first certificate")
	}
	before, err := tlsDial(p.tlsPort)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	os.WriteFile(cfg, []byte(yamlFor(certB, keyB)), 0o600)
	out, err := ferryOps(t, p, cfg, "reload")
	if err != nil || !strings.Contains(out, "configuration reloaded: applied") || !strings.Contains(out, "turn.tls_cert_file") {
		t.Fatalf("ferry reload: %v\n%s", err, out)
	}
	// A setting only a restart applies is named by every reload until then, not only by
	// the first that saw it.
	os.WriteFile(cfg, []byte(yamlFor(certB, keyB)+"runtime:\n  gogc: 80\n"), 0o600)
	for i := range 2 {
		out, err := ferryOps(t, p, cfg, "reload")
		if err != nil || !strings.Contains(out, "only when Ferry restarts: runtime.gogc") {
			t.Fatalf("reload %d after a restart-only change: %v\n%s", i+1, err, out)
		}
	}
	if !pemEqual(t, certB, served()) {
		t.Fatal("a new TLS connection after the reload does not get the new certificate")
	}
	if err := stunBinding(before); err != nil {
		t.Fatalf("a TLS connection from before the reload: %v", err)
	}

	os.WriteFile(cfg, []byte(yamlFor(certA, keyB)), 0o600) // a mismatched pair
	out, err = ferryOps(t, p, cfg, "reload")
	if err == nil || !strings.Contains(out, "reload refused") || !strings.Contains(out, "turn.tls_cert_file") {
		t.Fatalf("ferry reload with a mismatched pair: %v\n%s", err, out)
	}
	if !pemEqual(t, certB, served()) {
		t.Fatal("a refused reload must keep the certificate in use")
	}
}

// SIGTERM with an active allocation and an active room: /readyz turns 503 on both listeners
// at once, a new Allocate gets 508, a new room is refused while the open one takes its guest,
// and the stream goes on without loss until the client deletes its allocation; then Ferry
// exits 0 by itself.
func TestDrainKeepsRunningCallsThenExits(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	os.WriteFile(secrets, []byte(opsSecretOld+"\n"), 0o600)
	p := startFerry(t, opsConfig(secrets, "http:\n  listen: \"127.0.0.1:0\"\nrooms:\n  waiting_room: false\n"))
	echo := startEcho(t)
	user, pass := restCred(opsSecretOld, "alice")
	a := newTurnClient(t, p, user, pass)
	relayConn, err := a.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	links := roomLinks(t, p)
	host := joinRoom(t, p.httpPort, links[0])
	host.expect(t, "welcome")
	s := startStream(relayConn, echo.LocalAddr(), 4*time.Millisecond)
	time.Sleep(300 * time.Millisecond)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "draining: new allocations get 508", 1)
	for _, port := range []int{p.httpPort, p.adminPort} {
		if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port)); code != 503 || !strings.Contains(body, `"draining"`) {
			t.Fatalf("/readyz on port %d while draining: %d %s", port, code, body)
		}
	}
	if v := metricValue(t, p, "ferry_draining"); v != 1 {
		t.Fatal("ferry_draining must be 1")
	}
	u2, p2 := restCred(opsSecretOld, "bob")
	if _, err := newTurnClient(t, p, u2, p2).Allocate(); err == nil || !strings.Contains(err.Error(), "508") {
		t.Fatalf("a new Allocate while draining: %v, want 508", err)
	}
	guest := joinRoom(t, p.httpPort, links[1])
	guest.expect(t, "welcome")
	host.expect(t, "peer-joined")
	if code := refusedRoomJoin(t, p); code != 1013 {
		t.Fatalf("a new room while draining: close %d, want 1013", code)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case <-p.exited:
		t.Fatalf("ferry exited while an allocation was live:\n%s", p.log.String())
	default:
	}
	sent, echoed := s.finish(t)
	if echoed != sent || sent < 150 {
		t.Fatalf("%d of %d datagrams came back during the drain", echoed, sent)
	}

	relayConn.Close() // the client deletes its allocation: Refresh with LIFETIME 0
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("ferry did not exit after the last allocation ended:\n%s", p.log.String())
	}
	if p.exitErr != nil {
		t.Fatalf("exit: %v", p.exitErr)
	}
	if log := p.log.String(); !strings.Contains(log, "drained: the last allocation has ended") || !strings.Contains(log, "msg=stopped") {
		t.Fatalf("log:\n%s", log)
	}
}

// A second SIGTERM (or SIGINT) during a drain stops at once, ending the allocations left.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	for _, second := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(second.String(), func(t *testing.T) {
			dir := t.TempDir()
			secrets := filepath.Join(dir, "secrets")
			os.WriteFile(secrets, []byte(opsSecretOld+"\n"), 0o600)
			p := startFerry(t, opsConfig(secrets, ""))
			user, pass := restCred(opsSecretOld, "alice")
			if _, err := newTurnClient(t, p, user, pass).Allocate(); err != nil {
				t.Fatal(err)
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			waitLog(t, p, "draining: new allocations get 508", 1)
			began := time.Now()
			p.cmd.Process.Signal(second)
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				t.Fatalf("a second %v did not stop ferry", second)
			}
			if p.exitErr != nil || time.Since(began) > 3*time.Second {
				t.Fatalf("exit %v after %s", p.exitErr, time.Since(began))
			}
			if !strings.Contains(p.log.String(), "second signal during the drain: stopping now") {
				t.Fatalf("log:\n%s", p.log.String())
			}
		})
	}
}

// roomLinks creates a room offline with the server's generated key: host and guest links.
func roomLinks(t *testing.T, p *ferryProc) [2]string {
	t.Helper()
	out := ferryCmd(t, p, "room", "create", "--ttl", "1h")
	var links [2]string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "host link:"); ok {
			links[0] = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "guest link:"); ok {
			links[1] = strings.TrimSpace(v)
		}
	}
	if links[0] == "" || links[1] == "" {
		t.Fatalf("room create:\n%s", out)
	}
	return links
}

// refusedRoomJoin joins a fresh room and returns the close code Ferry ends it with.
func refusedRoomJoin(t *testing.T, p *ferryProc) int {
	t.Helper()
	link := roomLinks(t, p)[0]
	u, token, _ := strings.Cut(link, "#t=")
	room := u[strings.LastIndex(u, "/")+1:]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/v1/rooms/%s/ws", p.httpPort, room),
		&websocket.DialOptions{Subprotocols: []string{signaling.Protocol, "token." + token}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return int(ce.Code)
			}
			t.Fatalf("room connection: %v", err)
		}
	}
}

// tlsDial opens a TLS connection to Ferry's TURN TLS port (the test certificates are
// self-signed: the test compares them itself).
func tlsDial(port int) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), insecureTLS())
}

// insecureTLS accepts the tests' self-signed certificates; the tests compare them themselves.
func insecureTLS() *tls.Config {
	return &tls.Config{ServerName: "turn.ferry.test", InsecureSkipVerify: true} //nolint:gosec // tests only
}

// pemEqual reports whether the first certificate in certFile is raw.
func pemEqual(t *testing.T, certFile string, raw []byte) bool {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	return b != nil && bytes.Equal(b.Bytes, raw)
}

// stunBinding sends a STUN Binding request over conn and waits for the success response.
func stunBinding(conn net.Conn) error {
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(m.Raw); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	resp := &stun.Message{Raw: buf[:n]}
	if err := resp.Decode(); err != nil {
		return err
	}
	if resp.Type != stun.BindingSuccess || resp.TransactionID != m.TransactionID {
		return fmt.Errorf("binding: got %v", resp.Type)
	}
	return nil
}

// ferryOps runs a ferry command against p's configuration file and admin listener.
func ferryOps(t *testing.T, p *ferryProc, cfg string, args ...string) (string, error) {
	t.Helper()
	args = append(args, "--config", cfg, "--data-dir", p.dataDir, "--admin-listen", fmt.Sprintf("127.0.0.1:%d", p.adminPort))
	out, err := exec.Command(ferryBinary(t), args...).CombinedOutput()
	return string(out), err
}

// With umask 022, while Ferry runs with the allocation log busy, the data directory is 0700
// and every file in it 0600: alloclog.db with its -wal and -shm (IP addresses), the keys,
// and a file an older version or a restored backup left readable.
func TestDataDirectoryPrivateWhileRunning(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "turn-secret"), []byte(opsSecretOld+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o022) // the child inherits it
	p := startFerryAt(t, filepath.Join(dir, "ferry.yaml"), data, `turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: []
relay:
  bind_ip: 127.0.0.1
  allowed_peers: [127.0.0.2/32]
http:
  listen: "127.0.0.1:0"
`)
	syscall.Umask(old)
	echo := startEcho(t)
	user, pass := restCred(opsSecretOld, "alice")
	rc, err := newTurnClient(t, p, user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.WriteTo([]byte("x"), echo.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	get(t, fmt.Sprintf("http://127.0.0.1:%d/v1/ice-servers", p.httpPort)) // an access record
	want := map[string]bool{"alloclog.db": true, "alloclog.db-wal": true, "alloclog.db-shm": true, "turn-secret": true, "room-signing-key": true}
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := os.ReadDir(data)
		if err != nil {
			t.Fatal(err)
		}
		seen, bad := map[string]bool{}, []string{}
		for _, e := range entries {
			fi, _ := e.Info()
			seen[e.Name()] = true
			if fi.Mode().Perm() != 0o600 {
				bad = append(bad, fmt.Sprintf("%s is %v", e.Name(), fi.Mode().Perm()))
			}
		}
		missing := 0
		for name := range want {
			if !seen[name] {
				missing++
			}
		}
		if len(bad) > 0 {
			t.Fatalf("files readable by others while Ferry runs: %v", bad)
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expected files %v, have %v", want, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fi, _ := os.Stat(data); fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory is %v, want 0700", fi.Mode().Perm())
	}
}

// /readyz turns 503 ("capacity") once server.readiness_max_usage of relay.max_allocations,
// or of the relay port range, is in use, and ready again when allocations end.
func TestReadinessByCapacity(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	os.WriteFile(secrets, []byte(opsSecretOld+"\n"), 0o600)
	for _, c := range []struct{ name, extra string }{
		{"max_allocations", "  max_allocations: 4\nserver:\n  readiness_max_usage: 0.5\n"},
		{"relay_ports", "  port_min: 61300\n  port_max: 61303\nserver:\n  readiness_max_usage: 0.5\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			y := strings.Replace(opsConfig(secrets, ""), "  allowed_peers: [127.0.0.2/32]\n", "  allowed_peers: [127.0.0.2/32]\n"+c.extra, 1)
			p := startFerry(t, y)
			readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", p.adminPort)
			var conns []net.PacketConn
			for i := range 2 {
				if code, _ := get(t, readyz); code != 200 {
					t.Fatalf("not ready with %d allocation(s)", i)
				}
				user, pass := restCred(opsSecretOld, "u"+strconv.Itoa(i))
				rc, err := newTurnClient(t, p, user, pass).Allocate()
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, rc)
			}
			if code, body := get(t, readyz); code != 503 || !strings.Contains(body, `"capacity"`) {
				t.Fatalf("half full: %d %s", code, body)
			}
			conns[0].Close()
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if code, _ := get(t, readyz); code == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("not ready again after an allocation ended")
				}
			}
		})
	}
}
