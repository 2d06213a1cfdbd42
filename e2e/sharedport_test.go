package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/check"
)

// slowConn holds its first write back for a while: a client whose first byte comes late.
type slowConn struct {
	net.Conn
	delay time.Duration
	once  sync.Once
}

func (c *slowConn) Write(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Write(p)
}

// One port for everything, end to end: with turn.tcp_listen, turn.tls_listen and
// http.listen on one address, plain TURN clients, TURN-over-TLS clients and HTTPS clients
// (HTTP/2 and HTTP/1.1) work on it at the same time, each TURN client through a whole
// check (allocations, permissions, relayed round trip, refresh, delete). A client whose
// first byte comes two seconds late is served; garbage is closed at once; a connection that
// sends nothing is closed after the ten-second timeout; and when all are gone, Ferry has no
// more goroutines than before.
func TestSharedPortServesEveryKind(t *testing.T) {
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "shared", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	shared := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	p := startFerry(t, fmt.Sprintf(`turn:
  udp_listen: []
  tcp_listen: [%[1]q]
  tls_listen: [%[1]q]
  tls_cert_file: %[2]s
  tls_key_file: %[3]s
relay:
  bind_ip: 127.0.0.1
http:
  listen: %[1]q
admin:
  listen: "127.0.0.1:0"
`, shared, cert, key))
	pem, err := os.ReadFile(ca.file)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	secret := p.secret(t)
	var users sync.Mutex
	n := 0
	https := func(h2 bool) error {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + shared + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if want := map[bool]int{true: 2, false: 1}[h2]; resp.StatusCode != 200 || resp.ProtoMajor != want {
			return fmt.Errorf("%s over %s", resp.Status, resp.Proto)
		}
		return nil
	}
	turnCheck := func(scheme string, dial func(context.Context, string, string) (net.Conn, error)) error {
		users.Lock()
		n++ // a user of its own each, as each clinic's browser is (relay.max_allocations_per_user)
		user, pass := restCred(secret, fmt.Sprintf("clinic-%d", n))
		users.Unlock()
		res := check.Run(context.Background(), check.Target{URL: scheme + ":" + shared + "?transport=tcp", Username: user, Password: pass},
			check.Options{RootCAs: roots, Timeout: 10 * time.Second, Dial: dial})
		if !res.OK {
			return fmt.Errorf("%s: %s", scheme, res.Failure)
		}
		return nil
	}
	if err := https(true); err != nil { // warm up the HTTP server before counting goroutines
		t.Fatal(err)
	}
	before := goroutines(t, p)

	silent, err := net.Dial("tcp4", shared)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentStart := time.Now()
	silentClosed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.ReadAll(silent) // until Ferry closes it
		silentClosed <- time.Since(silentStart)
	}()

	const each = 4
	var wg sync.WaitGroup
	errs := make(chan error, 8*each)
	for i := range each {
		wg.Go(func() { errs <- turnCheck("turn", nil) })
		wg.Go(func() { errs <- turnCheck("turns", nil) })
		wg.Go(func() { errs <- https(i%2 == 0) })
		wg.Go(func() { // garbage: closed at once
			c, err := net.Dial("tcp4", shared)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_, _ = c.Write([]byte("\x80 not a protocol Ferry speaks\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			// Closed with the garbage unread: an EOF, or a reset.
			if _, err := c.Read(make([]byte, 16)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				errs <- fmt.Errorf("garbage: the connection was not closed: %v", err)
			}
		})
	}
	slow := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return &slowConn{Conn: c, delay: 2 * time.Second}, err
	}
	wg.Go(func() { errs <- turnCheck("turn", slow) })
	wg.Go(func() { errs <- turnCheck("turns", slow) })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	select {
	case d := <-silentClosed:
		if d < 9*time.Second {
			t.Errorf("a silent connection was closed after %s, before the 10 s timeout", d)
		}
		t.Logf("the silent connection was closed after %s", d.Round(100*time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("a connection that sends nothing was not closed within 15 s")
	}
	deadline := time.Now().Add(5 * time.Second)
	var after int
	for after = goroutines(t, p); after > before+2 && time.Now().Before(deadline); after = goroutines(t, p) {
		time.Sleep(200 * time.Millisecond)
	}
	if after > before+2 {
		t.Fatalf("Ferry runs %d goroutines after the clients left, %d before", after, before)
	}
	t.Logf("goroutines: %d before, %d after", before, after)
}

var goroutinesLine = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

// goroutines returns Ferry's go_goroutines from its admin listener.
func goroutines(t *testing.T, p *ferryProc) int {
	t.Helper()
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.adminPort))
	m := goroutinesLine.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no go_goroutines in /metrics")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
