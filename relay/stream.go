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
// handshakes) connections itself, wraps each in a streamConn that frames the stream, relays
// ChannelData and Send indications and inspects control messages, and hands the wrapped
// connection to pion through Accept.
type streamListener struct {
	s         *Server
	ln        net.Listener
	tlsConf   *tls.Config // nil for plain TCP
	transport Transport
	accepted  chan net.Conn
	done      chan struct{}
	once      sync.Once
	handshake chan struct{} // bounds concurrent TLS handshakes
}

const (
	// tlsHandshakeTimeout bounds a TLS handshake.
	tlsHandshakeTimeout = 10 * time.Second
	// maxPendingHandshakes bounds concurrent TLS handshakes per listener.
	maxPendingHandshakes = 256
	// idleTimeout closes a TCP/TLS connection that carries no allocation and sends nothing.
	idleTimeout = 60 * time.Second
)

func newStreamListener(s *Server, ln net.Listener, t Transport, conf *tls.Config) *streamListener {
	return &streamListener{s: s, ln: ln, tlsConf: conf, transport: t,
		accepted: make(chan net.Conn), done: make(chan struct{}),
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
			// Out of file descriptors and the like: wait a little rather than spin.
			l.s.log.Warn("accept failed", "transport", l.transport.String(), "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-l.done:
				return
			}
		}
		if l.tlsConf == nil {
			l.deliver(c)
			continue
		}
		select {
		case l.handshake <- struct{}{}:
		default:
			_ = c.Close() // handshake flood: shed load instead of queueing
			continue
		}
		wg.Go(func() {
			defer func() { <-l.handshake }()
			tc := tls.Server(c, l.tlsConf)
			ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				_ = c.Close()
				return
			}
			l.deliver(tc)
		})
	}
}

func (l *streamListener) deliver(c net.Conn) {
	sc, err := l.s.newStreamConn(l, c)
	if err != nil {
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
	// raw: an RFC 6062 data connection after ConnectionBind; bytes pass through untouched.
	raw      atomic.Bool
	deadline bool // an idle read deadline is set
	once     sync.Once
}

const (
	streamBufLen = 4096
	// maxStreamFrame is the largest frame: a ChannelData of 65535 bytes with padding.
	maxStreamFrame = channelHdrLen + 65536
)

func (s *Server) newStreamConn(l *streamListener, c net.Conn) (*streamConn, error) {
	local, ok1 := addrPortOf(c.LocalAddr())
	remote, ok2 := addrPortOf(c.RemoteAddr())
	if !ok1 || !ok2 {
		return nil, errors.New("relay: stream connection without TCP addresses")
	}
	sc := &streamConn{Conn: c, l: l, local: local, remote: remote,
		key: tupleKey{stream: true, server: local, client: remote}, buf: make([]byte, streamBufLen)}
	s.streams.add(sc)
	return sc, nil
}

// Read returns the next control message for pion.
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
	for {
		kind, size, plen := nextFrame(c.buf[c.r:c.w], true)
		switch kind {
		case frameIncomplete:
			if err := c.fill(size); err != nil {
				return 0, err
			}
			continue
		case frameInvalid:
			s.m.drop(dropMalformed)
			return 0, errors.New("relay: stream is not STUN or ChannelData") // pion closes it
		}
		frame := c.buf[c.r : c.r+size]
		c.r += size
		if kind == frameChannelData {
			if a := c.alloc.Load(); a != nil {
				s.relayChannelData(a, be16(frame), frame[channelHdrLen:channelHdrLen+plen])
			} else {
				s.m.drop(dropNoAllocation)
			}
			continue
		}
		switch be16(frame) {
		case typeSendIndication:
			if a := c.alloc.Load(); a != nil {
				s.relaySendIndication(a, frame)
			} else {
				s.m.drop(dropNoAllocation)
			}
			continue
		case typeBindingRequest:
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
			// RFC 6062 §5.4: after ConnectionBind this connection carries raw peer data.
			c.raw.Store(true)
		}
		return copy(p, frame), nil
	}
}

// fill reads more bytes so that at least one frame can be parsed. The buffer grows up to
// maxStreamFrame for large frames and shrinks back to streamBufLen afterwards.
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
	c.idleDeadline()
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

// idleDeadline keeps a read deadline on connections without an allocation, so that idle
// connections do not hold a goroutine forever; allocations have lifetimes of their own.
func (c *streamConn) idleDeadline() {
	want := c.alloc.Load() == nil
	switch {
	case want:
		_ = c.Conn.SetReadDeadline(time.Now().Add(idleTimeout))
		c.deadline = true
	case c.deadline:
		_ = c.Conn.SetReadDeadline(time.Time{})
		c.deadline = false
	}
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
// RFC 6062 data connection.
func (c *streamConn) Write(b []byte) (int, error) {
	if !c.raw.Load() {
		c.l.s.observeResponse(b)
	}
	return c.Conn.Write(b)
}

func (c *streamConn) Close() error {
	var err error
	c.once.Do(func() {
		c.l.s.streams.remove(c)
		err = c.Conn.Close()
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
