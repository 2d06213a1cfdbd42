package listen

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// framerHarness runs the TCP/TLS connection framer (streamConn) over in-memory pipes, with
// a real control plane and allocation table on a fixed clock, so that the same bytes always
// get the same answers.
type framerHarness struct {
	l     *Listeners
	table *alloc.Table
	now   time.Time
}

func newFramerHarness(t testing.TB) *framerHarness {
	t.Helper()
	st, err := stats.New(prometheus.NewRegistry(), true)
	if err != nil {
		t.Fatal(err)
	}
	x := &framerHarness{now: time.Unix(1_800_000_000, 0)}
	clock := func() time.Time { return x.now }
	x.table, err = alloc.NewTable(alloc.Config{RelayIPv4: netip.MustParseAddr("127.0.0.1"), PortMin: 64700, PortMax: 65199,
		Policy:           policy.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, nil, nil, nil),
		MaxAllocationAge: time.Hour, Stats: st, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.table.Close)
	a, err := auth.New(auth.Config{Secrets: []string{"0123456789abcdef"}, MaxTTL: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := control.New(control.Config{Realm: "ferry", Auth: a, Table: x.table, Stats: st, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	x.l = &Listeners{cfg: Config{Table: x.table, Control: ctrl, Stats: st, IdleTimeout: time.Minute}}
	return x
}

// pipeConn is the server end of a client's TCP connection: it reads what the client wrote
// (EOF once the client has closed its side) and collects what the server answers, so that
// answers to the last requests are not lost when the client stops writing (a half-close).
type pipeConn struct {
	r      *io.PipeReader
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (p *pipeConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *pipeConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, net.ErrClosed
	}
	return p.out.Write(b)
}

func (p *pipeConn) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.r.CloseWithError(net.ErrClosed) // a client still writing gets an error
}

func (p *pipeConn) answers() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.out.Bytes())
}

func (p *pipeConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478} }
func (p *pipeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 40000}
}
func (p *pipeConn) SetDeadline(time.Time) error      { return nil }
func (p *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (p *pipeConn) SetWriteDeadline(time.Time) error { return nil }

// transcript writes stream to a framed connection, cut before each offset in cuts (taken
// modulo its length), closes its side, and returns every byte the server answered.
func (x *framerHarness) transcript(t *testing.T, stream, cuts []byte) []byte {
	r, client := io.Pipe()
	conn := &pipeConn{r: r}
	sc := &streamConn{s: &streamListener{l: x.l, transport: wire.TCP}, release: func() {}, conn: conn,
		remote: netip.MustParseAddrPort("127.0.0.9:40000")}
	sc.key = alloc.Key{Transport: wire.TCP, Client: sc.remote, Server: netip.MustParseAddrPort("127.0.0.1:3478")}
	sc.buf = make([]byte, streamBufLen)
	framed := make(chan struct{})
	go func() {
		sc.frames()
		_ = conn.Close()
		close(framed)
	}()
	prev := 0
	for _, c := range cuts {
		if len(stream) == 0 {
			break
		}
		at := int(c) % len(stream)
		if at <= prev {
			continue
		}
		if _, err := client.Write(stream[prev:at]); err != nil {
			break
		}
		prev = at
	}
	if prev < len(stream) {
		_, _ = client.Write(stream[prev:])
	}
	_ = client.Close()
	select {
	case <-framed:
	case <-time.After(10 * time.Second):
		t.Fatal("the framer did not stop when the client closed")
	}
	// Whatever the bytes allocated ends, so that the next run starts alike.
	x.now = x.now.Add(13 * time.Hour)
	x.table.Sweep()
	x.now = time.Unix(1_800_000_000, 0)
	return conn.answers()
}

// FuzzStreamFramer feeds a TCP/TLS client's byte stream to the connection framer (RFC 8656
// §12.5, RFC 8489 §6.2.2), cut into writes at fuzzed places. Whatever the cuts, the framer
// answers exactly what it answers to the same bytes in one write: split and coalesced
// messages frame alike, and nothing hidden inside a long ChannelData is ever answered
// (C27). It never panics and stops when the client closes. Seeds (C27's probes, Bindings
// split and coalesced): testdata/fuzz/FuzzStreamFramer.
func FuzzStreamFramer(f *testing.F) {
	x := newFramerHarness(f)
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		whole := x.transcript(t, stream, nil)
		split := x.transcript(t, stream, cuts)
		if !bytes.Equal(whole, split) {
			t.Fatalf("cut at %v the stream got other answers:\n%x\nthan in one write:\n%x", cuts, split, whole)
		}
	})
}

// The framer harness answers what a TCP client would be answered: two Binding requests cut
// at every byte get two Binding responses, in order; bytes after an invalid frame none.
func TestFramerHarnessAnswers(t *testing.T) {
	x := newFramerHarness(t)
	req := func(id byte) []byte {
		b := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42}
		return append(b, bytes.Repeat([]byte{id}, 12)...)
	}
	stream := append(req(1), req(2)...)
	every := make([]byte, len(stream))
	for i := range every {
		every[i] = byte(i)
	}
	out := x.transcript(t, stream, every)
	var ids []byte
	for len(out) >= wire.HeaderLen {
		kind, size, _ := wire.NextFrame(out, true)
		if kind != wire.FrameSTUN || wire.Be16(out) != 0x0101 {
			t.Fatalf("not a Binding response: %x", out)
		}
		ids = append(ids, out[8])
		out = out[size:]
	}
	if !bytes.Equal(ids, []byte{1, 2}) {
		t.Fatalf("answered transactions %v, want [1 2]", ids)
	}
	if got := x.transcript(t, append([]byte("GET / HTTP/1.1\r\n\r\n"), req(3)...), nil); len(got) != 0 {
		t.Fatalf("answered after an invalid frame: %x", got)
	}
}
