package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// streamListener serves TURN over TCP or TLS on one listening socket. It accepts (and for TLS
// handshakes) connections itself, within per-source and total connection caps, wraps each in
// a streamConn that frames the stream, relays ChannelData and Send indications and inspects
// control messages, and hands the wrapped connection to pion through Accept.
type streamListener struct {
	s         *Server
	ln        net.Listener
	tlsConf   *tls.Config // nil for plain TCP
	transport Transport
	accepted  chan net.Conn
	done      chan struct{}
	ctx       context.Context // canceled on Close: pending TLS handshakes end
	cancel    context.CancelFunc
	once      sync.Once
	handshake chan struct{} // bounds concurrent TLS handshakes
	lastWarn  time.Time
	handoff   func(net.Conn) // HTTPS connections of a listener shared with HTTP; nil: TURN only
}

const (
	// tlsHandshakeTimeout bounds a TLS handshake.
	tlsHandshakeTimeout = 10 * time.Second
	// maxPendingHandshakes bounds concurrent TLS handshakes per listener; one source may hold
	// at most a connection cap's share of them (see connLimits).
	maxPendingHandshakes = 1024
)

func newStreamListener(s *Server, ln net.Listener, t Transport, conf *tls.Config) *streamListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamListener{s: s, ln: ln, tlsConf: conf, transport: t,
		accepted: make(chan net.Conn), done: make(chan struct{}), ctx: ctx, cancel: cancel,
		handshake: make(chan struct{}, maxPendingHandshakes)}
}

func (l *streamListener) start(wg *sync.WaitGroup) { wg.Go(func() { l.acceptLoop(wg) }) }

func (l *streamListener) acceptLoop(wg *sync.WaitGroup) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little rather than spin, and say
			// so once a minute, not on every attempt.
			if now := time.Now(); now.Sub(l.lastWarn) > time.Minute {
				l.lastWarn = now
				l.s.log.Warn("accept failed; retrying", "transport", l.transport.String(), "err", errors.Unwrap(err))
			}
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-l.done:
				return
			}
		}
		remote, _ := addrPortOf(c.RemoteAddr())
		if reason := l.s.conns.acquire(remote.Addr()); reason != "" {
			l.s.m.connsRefused.WithLabelValues(reason).Inc()
			_ = c.Close()
			continue
		}
		release := func() { l.s.conns.release(remote.Addr()) }
		if l.tlsConf == nil {
			l.deliver(c, release)
			continue
		}
		select {
		case l.handshake <- struct{}{}:
		default:
			l.s.m.connsRefused.WithLabelValues("handshakes").Inc()
			release()
			_ = c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-l.handshake }()
			tc := tls.Server(c, l.tlsConf)
			ctx, cancel := context.WithTimeout(l.ctx, tlsHandshakeTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				release()
				_ = c.Close()
				return
			}
			if l.handoff == nil {
				l.deliver(tc, release)
				return
			}
			conn, http, err := routeShared(l.ctx, tc, tlsHandshakeTimeout)
			switch {
			case err != nil:
				release()
				_ = c.Close()
			case http:
				release() // the HTTP server's own limits govern it from here
				l.handoff(conn)
			default:
				l.deliver(conn, release)
			}
		})
	}
}

func (l *streamListener) deliver(c net.Conn, release func()) {
	sc, err := l.s.newStreamConn(l, c, release)
	if err != nil {
		release()
		_ = c.Close()
		return
	}
	select {
	case l.accepted <- sc:
	case <-l.done:
		_ = sc.Close()
	}
}

// Accept, Close and Addr make streamListener the net.Listener pion serves.
func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		l.cancel()
		err = l.ln.Close()
	})
	return err
}

func (l *streamListener) Addr() net.Addr { return l.ln.Addr() }

// streamConn frames a client's TCP/TLS stream (RFC 8656 §12.5, RFC 8489 §6.2.2). Read is
// called by pion's per-connection goroutine: it reads many frames per syscall, relays
// ChannelData and Send indications directly, answers Binding requests, and returns only
// control messages to pion, one whole message per call.
type streamConn struct {
	net.Conn
	l      *streamListener
	local  netip.AddrPort
	remote netip.AddrPort
	key    tupleKey
	buf    []byte
	r, w   int
	alloc  atomic.Pointer[alloc]
	// raw: an RFC 6062 data connection after a successful ConnectionBind; bytes pass through
	// untouched. bindPending: a ConnectionBind went to pion and its answer is not out yet.
	raw         atomic.Bool
	bindPending atomic.Bool
	release     func() // returns the connection's slot in the connection caps
	once        sync.Once
}

const (
	streamBufLen = 4096
	// maxStreamFrame is the largest frame: a ChannelData of 65535 bytes with padding.
	maxStreamFrame = channelHdrLen + 65536
)

func (s *Server) newStreamConn(l *streamListener, c net.Conn, release func()) (*streamConn, error) {
	local, ok1 := addrPortOf(c.LocalAddr())
	remote, ok2 := addrPortOf(c.RemoteAddr())
	if !ok1 || !ok2 {
		return nil, errors.New("relay: stream connection without TCP addresses")
	}
	sc := &streamConn{Conn: c, l: l, local: local, remote: remote, release: release,
		key: tupleKey{stream: true, server: local, client: remote}, buf: make([]byte, streamBufLen)}
	// Without an allocation the connection has IdleTimeout to live, however it trickles.
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	s.streams.add(sc)
	return sc, nil
}

// allocationChanged sets the read deadline for the connection's new state: none while it
// holds an allocation (the allocation's lifetime governs), IdleTimeout from now without one.
// Setting a deadline also ends a Read already blocked.
func (c *streamConn) allocationChanged(has bool) {
	if c.raw.Load() {
		return
	}
	if has {
		_ = c.Conn.SetReadDeadline(time.Time{})
	} else {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.l.s.cfg.IdleTimeout))
	}
}

// Read returns the next control message for pion. Data frames found on the way are relayed
// in batches; the batch is sent before Read blocks or returns.
func (c *streamConn) Read(p []byte) (int, error) {
	if c.raw.Load() {
		if c.r < c.w { // bytes that arrived right behind the ConnectionBind
			n := copy(p, c.buf[c.r:c.w])
			c.r += n
			return n, nil
		}
		return c.Conn.Read(p)
	}
	s := c.l.s
	var ob *outbox
	flush := func() {
		if ob != nil {
			ob.flush(s)
			s.outs.Put(ob)
			ob = nil
		}
	}
	defer flush()
	for {
		kind, size, plen := nextFrame(c.buf[c.r:c.w], true)
		switch kind {
		case frameIncomplete:
			flush()
			if err := c.fill(size); err != nil {
				return 0, err
			}
			continue
		case frameInvalid:
			s.m.drop(dropMalformed)
			return 0, errors.New("relay: stream is not STUN or ChannelData") // pion closes it
		}
		frame := c.buf[c.r : c.r+size]
		isData := kind == frameChannelData || be16(frame) == typeSendIndication
		if isData {
			a := c.alloc.Load()
			if a == nil {
				c.r += size
				s.m.drop(dropNoAllocation)
				continue
			}
			if ob == nil {
				ob = s.outbox()
			}
			c.r += size
			if kind == frameChannelData {
				s.relayChannelData(a, be16(frame), frame[channelHdrLen:channelHdrLen+plen], ob)
			} else {
				s.relaySendIndication(a, frame, ob)
			}
			continue
		}
		flush() // keep data and control in order
		c.r += size
		if be16(frame) == typeBindingRequest {
			s.answerBinding(frame, c.l.transport, c.remote, c.write)
			continue
		}
		if !s.inspect(frame, c.l.transport, c.local, c.remote, c.write) {
			continue
		}
		if len(frame) > len(p) {
			s.m.drop(dropTooLarge)
			continue
		}
		if be16(frame) == typeConnectionBindRequest && s.cfg.TCPAllocations {
			c.bindPending.Store(true) // raw mode starts only if pion says yes (see Write)
		}
		return copy(p, frame), nil
	}
}

// fill reads more bytes so that at least one frame can be parsed. The buffer grows up to
// maxStreamFrame for large frames and shrinks back to streamBufLen afterwards. Frames still
// queued in an outbox point into the buffer, so the caller flushes before filling.
func (c *streamConn) fill(_ int) error {
	if c.r == c.w {
		c.r, c.w = 0, 0
		if len(c.buf) > streamBufLen {
			c.buf = make([]byte, streamBufLen)
		}
	}
	if c.w == len(c.buf) {
		if c.r > 0 {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		} else {
			if len(c.buf) >= maxStreamFrame {
				return errors.New("relay: frame larger than 65539 bytes")
			}
			nb := make([]byte, min(2*len(c.buf), maxStreamFrame))
			c.w = copy(nb, c.buf[c.r:c.w])
			c.r = 0
			c.buf = nb
		}
	}
	n, err := c.Conn.Read(c.buf[c.w:])
	c.w += n
	if err != nil && n == 0 {
		if a := c.alloc.Load(); a != nil && !isTimeout(err) {
			a.setEndReason(EndConnClosed)
		}
		return err
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *streamConn) write(b []byte) error {
	_, err := c.Conn.Write(b)
	return err
}

// Write is pion's path to the client: control responses (counted), or peer data on an
// RFC 6062 data connection. A ConnectionBind success response switches the connection to raw
// mode (RFC 6062 §5.4): from then on it carries the peer's bytes, without a deadline.
func (c *streamConn) Write(b []byte) (int, error) {
	if !c.raw.Load() {
		c.l.s.observeResponse(b)
		if len(b) >= 2 && be16(b) == typeConnectionBindSuccess && c.bindPending.Swap(false) {
			c.raw.Store(true)
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
	}
	return c.Conn.Write(b)
}

func (c *streamConn) Close() error {
	var err error
	c.once.Do(func() {
		c.l.s.streams.remove(c)
		err = c.Conn.Close()
		c.release()
	})
	return err
}

// streamTable finds the streamConn of a pion event's 5-tuple.
type streamTable struct {
	mu    sync.Mutex
	conns map[tupleKey]*streamConn
	wg    sync.WaitGroup
}

func (t *streamTable) add(c *streamConn) {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[tupleKey]*streamConn{}
	}
	t.conns[c.key] = c
	t.wg.Add(1)
	t.mu.Unlock()
}

func (t *streamTable) remove(c *streamConn) {
	t.mu.Lock()
	if t.conns[c.key] == c {
		delete(t.conns, c.key)
	}
	t.mu.Unlock()
	t.wg.Done()
}

func (t *streamTable) get(k tupleKey) *streamConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[k]
}

func (t *streamTable) closeAll() {
	t.mu.Lock()
	conns := make([]*streamConn, 0, len(t.conns))
	for _, c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

var _ io.ReadWriteCloser = (*streamConn)(nil)
