package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards connections to a target and can blackhole one (stop forwarding, keep
// both sockets open: a half-open path) or reset it (RST both ways).
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxied
	wg     sync.WaitGroup
}

type proxied struct {
	client, server net.Conn
	first          string // the client's first line, e.g. "GET /v1/rooms/.../ws HTTP/1.1"
	holed          chan struct{}
	once           sync.Once
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.client.Close()
			_ = c.server.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp4", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &proxied{client: c, server: s, holed: make(chan struct{})}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			// Note the request line (HTTP requests are longer than 128 bytes), then forward.
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, _ := br.Peek(128)
			_ = c.SetReadDeadline(time.Time{})
			first, _, _ := strings.Cut(string(line), "\r\n")
			p.mu.Lock()
			pc.first = first
			p.mu.Unlock()
			p.pipe(pc, s, br)
		}()
		go p.pipe(pc, c, s)
	}
}

// pipe copies src to dst until either ends; once blackholed it reads and drops.
func (p *tcpProxy) pipe(pc *proxied, dst io.Writer, src io.Reader) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			_ = pc.client.Close()
			_ = pc.server.Close()
			return
		}
		select {
		case <-pc.holed:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// find returns the proxied connections whose first line contains s.
func (p *tcpProxy) find(s string) []*proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*proxied
	for _, c := range p.conns {
		if strings.Contains(c.first, s) {
			out = append(out, c)
		}
	}
	return out
}

func (pc *proxied) blackhole() { pc.once.Do(func() { close(pc.holed) }) }

func (pc *proxied) reset() {
	for _, c := range []net.Conn{pc.client, pc.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// B05 in the browser: the guest's room connection goes half-open (the test's proxy
// blackholes it) while the host restarts ICE. The network changes; the guest's page finds
// the socket dead and reconnects with the same link through the same proxy: same
// participant id, still admitted, the host sees exactly one peer-reconnected (no peer-left,
// no peer-joined, no knock), the host's offer and candidates sent meanwhile arrive in
// order, and the restart completes. Resetting the old connection afterwards evicts nobody.
func TestB05HalfOpenRoomConnection(t *testing.T) {
	e := startPageFerry(t, "  page:\n    enabled: true\n")
	proxy := newTCPProxy(t, strings.TrimPrefix(e.base, "http://"))
	hostLink, guestLink := e.room(t)
	guestLink = "http://" + proxy.ln.Addr().String() + guestLink[len(e.base):]
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{})
	checkRelayOnly(t, host, guest)
	admit(t, host, guest)
	host.waitMedia(15*time.Second, true, true)
	guest.waitMedia(15*time.Second, true, true)
	settle(t, host, guest, 5*time.Second, "the call")
	ws := proxy.find("/ws")
	if len(ws) != 1 {
		t.Fatalf("%d room connections through the proxy", len(ws))
	}
	welcome := guest.frames(false)[0]
	hostSeen := len(host.frames(false))
	guestSeen := len(guest.frames(false))

	ws[0].blackhole()
	host.eval(livePC + `.restartIce()`) // an offer and candidates into the half-open socket
	host.waitJS(livePC+`.signalingState === 'have-local-offer'`, 5*time.Second, "the host's restart offer out")
	time.Sleep(time.Second)
	guest.eval(`window.dispatchEvent(new Event('online'))`) // the phone changed networks
	guest.waitJS(`window.__ws.length === 2 && window.__ws[1].readyState === 1`, 10*time.Second, "the guest reconnected")
	settle(t, host, guest, 10*time.Second, "after the reconnect")
	if got := len(proxy.find("/ws")); got != 2 {
		t.Fatalf("%d room connections through the proxy", got)
	}
	ws[0].reset() // the old connection ends with a RST after the takeover
	time.Sleep(2 * time.Second)

	var second map[string]any
	var offers []float64
	lastSeq := 0.0
	for _, f := range guest.frames(false)[guestSeen:] {
		switch f["type"] {
		case "welcome":
			second = f
		case "offer", "candidate":
			if second != nil {
				offers = append(offers, f["seq"].(float64))
			}
		}
		if s, ok := f["seq"].(float64); ok {
			if s <= lastSeq {
				t.Errorf("seq %v after %v", s, lastSeq)
			}
			lastSeq = s
		}
	}
	if second == nil || second["reconnected"] != true || second["you"] != welcome["you"] || second["state"] != "admitted" {
		t.Fatalf("the guest's second welcome %v (first %v)", second, welcome)
	}
	if len(offers) == 0 {
		t.Error("the host's restart offer did not reach the guest after the takeover")
	}
	reconnected := 0
	for _, f := range host.frames(false)[hostSeen:] {
		switch f["type"] {
		case "peer-reconnected":
			reconnected++
		case "peer-left", "peer-joined", "knock":
			t.Errorf("the host got %v", f)
		}
	}
	if reconnected != 1 {
		t.Errorf("the host got %d peer-reconnected", reconnected)
	}
	for _, tb := range []*tab{host, guest} {
		tb.waitMedia(10*time.Second, true, true)
	}
	if got := guest.eval(`document.body.dataset.view`); got != "call" {
		t.Errorf("guest view %v", got)
	}
	noErrs(t, host, guest)
	_ = bytes.Equal
}
