package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/ferryrelay/ferry/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const roomKey = "room-signing-key-for-tests-0123456789"

// fakeClock runs timers when the test advances it, in order, on the test's goroutine.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.done
		t.done = true
		return was
	}
}

// Advance moves the clock by d, running every timer that falls due, earliest first.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		for _, t := range c.timers {
			if !t.done && !t.at.After(target) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			c.now = target
			c.mu.Unlock()
			return
		}
		next.done = true
		if next.at.After(c.now) {
			c.now = next.at
		}
		c.mu.Unlock()
		next.f()
	}
}

// syncBuffer is a log sink for the privacy checks.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// roomEnv is a signaling handler with rooms on a loopback HTTP server and a fake clock.
type roomEnv struct {
	clock   *fakeClock
	auth    *auth.Authenticator
	tokens  *auth.RoomTokens
	h       *Handler
	rooms   *MemoryRooms
	srv     *httptest.Server
	reg     *prometheus.Registry
	logs    *syncBuffer
	room    string
	apiKey  string
	metrics *Metrics
	minted  int
}

type envOpts struct {
	rooms  RoomsConfig
	memory MemoryRoomsConfig
	keys   []string
}

func newRoomEnv(t *testing.T, mutate ...func(*envOpts)) *roomEnv {
	t.Helper()
	e := &roomEnv{clock: newFakeClock(), reg: prometheus.NewRegistry(), logs: &syncBuffer{}, room: auth.NewRoomID()}
	o := envOpts{keys: []string{roomKey},
		rooms:  RoomsConfig{PublicURL: "https://consult.clinic.example", PingInterval: time.Hour, IdleTimeout: 10 * time.Hour},
		memory: MemoryRoomsConfig{}}
	for _, m := range mutate {
		m(&o)
	}
	var err error
	e.auth, err = auth.New(auth.Config{Secrets: []string{testSecret}, MaxTTL: 24 * time.Hour, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.tokens, err = auth.NewRoomTokens(auth.RoomTokensConfig{Keys: o.keys, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	o.memory.Clock, o.memory.Registerer = e.clock, e.reg
	e.rooms, err = NewMemoryRooms(o.memory)
	if err != nil {
		t.Fatal(err)
	}
	e.metrics, err = NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	key, sum, _ := NewAPIKey()
	e.apiKey = key
	rc := o.rooms
	rc.Tokens, rc.Rooms, rc.Clock = e.tokens, e.rooms, e.clock
	rc.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.h = NewHandler(Config{Auth: e.auth, URLs: BuildURLs("127.0.0.1", []int{3478}, []int{3478}, nil),
		APIKeys: []APIKey{{Name: "app", SHA256: sum}}, Metrics: e.metrics, Rooms: &rc})
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(func() {
		if err := e.h.Close(); err != nil {
			t.Errorf("handler close: %v", err)
		}
		e.srv.Close()
	})
	return e
}

// token mints a token for e.room valid for two hours. Each call makes another link (nbf
// differs by a second): identical claims would make the same token, the same participant.
func (e *roomEnv) token(t *testing.T, role string, mutate ...func(*auth.RoomClaims)) string {
	t.Helper()
	e.minted++
	c := auth.RoomClaims{Room: e.room, Role: role, Expires: e.clock.Now().Add(2 * time.Hour),
		NotBefore: e.clock.Now().Add(-time.Duration(e.minted) * time.Second)}
	for _, m := range mutate {
		m(&c)
	}
	tok, err := e.tokens.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func named(n string) func(*auth.RoomClaims) { return func(c *auth.RoomClaims) { c.Name = n } }

func (e *roomEnv) wsURL(room string) string {
	return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/rooms/" + room + "/ws"
}

// msg is one server message.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }

// client is a raw ferry.v1 WebSocket client: it reads all the time (so pings get pongs)
// and collects messages and the close.
type client struct {
	ws       *websocket.Conn
	msgs     chan msg
	done     chan struct{}
	closeErr error
}

func (e *roomEnv) dial(t *testing.T, token string) *client {
	t.Helper()
	return dialURL(t, e.wsURL(e.room), nil, []string{Protocol, "token." + token})
}

func dialURL(t *testing.T, u string, hc *http.Client, protocols []string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: protocols, HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &client{ws: ws, msgs: make(chan msg, 1024), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				c.closeErr = err
				return
			}
			var m msg
			if err := json.Unmarshal(data, &m); err != nil {
				m = msg{"type": "<not json>", "raw": string(data)}
			}
			c.msgs <- m
		}
	}()
	t.Cleanup(func() { _ = c.ws.CloseNow(); <-c.done })
	return c
}

// next returns the next message, failing after 5 s.
func (c *client) next(t *testing.T) msg {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m
		default:
		}
		t.Fatalf("connection closed while waiting for a message: %v", c.closeErr)
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return nil
}

// expect returns the next message and fails unless it has type typ.
func (c *client) expect(t *testing.T, typ string) msg {
	t.Helper()
	m := c.next(t)
	if m.str("type") != typ {
		t.Fatalf("got %v, want a %s message", m, typ)
	}
	return m
}

// quiet fails if a message arrives within 300 ms.
func (c *client) quiet(t *testing.T) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("unexpected message %v", m)
	case <-time.After(300 * time.Millisecond):
	}
}

func (c *client) send(t *testing.T, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ws.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// closed waits for the server to close and returns the close code and reason.
func (c *client) closed(t *testing.T) (websocket.StatusCode, string) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(8 * time.Second):
		t.Fatal("the server did not close the connection")
	}
	var ce websocket.CloseError
	if errors.As(c.closeErr, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, c.closeErr.Error()
}

// expectClose drains to the close and checks its code.
func (c *client) expectClose(t *testing.T, code int) string {
	t.Helper()
	got, reason := c.closed(t)
	if int(got) != code {
		t.Fatalf("closed with %d %q, want %d", got, reason, code)
	}
	return reason
}

// gauge reads a gauge from the registry.
func (e *roomEnv) gauge(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue()
			}
			return m.Counter.GetValue()
		}
	}
	return 0
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *roomEnv) closes(reason string) float64 {
	return testutil.ToFloat64(e.metrics.roomCloses.WithLabelValues(reason))
}

// proxy is a TCP proxy the test owns between a client and Ferry: it can blackhole (stop
// forwarding, keep both sockets open) or reset its connections.
type proxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	pairs   [][2]net.Conn
	holes   map[net.Conn]bool // client-side conns whose traffic is dropped
	dropped atomic.Int64
	wg      sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, holes: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, pr := range p.pairs {
			_ = pr[0].Close()
			_ = pr[1].Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp4", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.pairs = append(p.pairs, [2]net.Conn{c, up})
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up, c)
		go p.pipe(up, c, c)
	}
}

func (p *proxy) pipe(dst, src, client net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		hole := p.holes[client]
		p.mu.Unlock()
		if hole {
			p.dropped.Add(int64(n))
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// blackhole drops the traffic of the i-th proxied connection from now on, both ways.
func (p *proxy) blackhole(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holes[p.pairs[i][0]] = true
}

// reset ends the i-th proxied connection with a TCP RST on both sides.
func (p *proxy) reset(i int) {
	p.mu.Lock()
	pr := p.pairs[i]
	p.mu.Unlock()
	for _, c := range pr {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

func (e *roomEnv) post(t *testing.T, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/rooms", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func mustJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("not JSON (%v): %s", err, data)
	}
}

func httpGet(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// pongs is the number of answered pings over every open room connection.
func (e *roomEnv) pongs() uint64 {
	e.h.hub.mu.Lock()
	defer e.h.hub.mu.Unlock()
	var n uint64
	for c := range e.h.hub.conns {
		n += c.pongs.Load()
	}
	return n
}

// step advances the clock by one ping interval and waits until want more pings have been
// answered, so that no ping timeout can outrun a pong that is on its way.
func (e *roomEnv) step(t *testing.T, d time.Duration, want uint64) {
	t.Helper()
	before := e.pongs()
	e.clock.Advance(d)
	eventually(t, "pongs", func() bool { return e.pongs() >= before+want })
}
