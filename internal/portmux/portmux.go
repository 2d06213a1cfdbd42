// Package portmux lets TURN over TLS, TURN over plain TCP and HTTPS share one listening port
// (443, the one port strict firewalls let out), telling connections apart by their first
// bytes and, for TLS, by ALPN; it also holds the TLS policy of TURN listeners.
package portmux

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// ALPN protocol ids: TURN's (RFC 7443) and HTTP's.
const (
	ALPNTURN   = "stun.turn"
	ALPNHTTP2  = "h2"
	ALPNHTTP11 = "http/1.1"
)

// TLSConfig derives a TURN listener's TLS configuration from base: TLS 1.2 or newer with
// forward-secret AEAD suites only (RFC 8656 §3.1 asks for current TLS practice; RFC 9325),
// unless base already narrows them, and ALPN stun.turn (RFC 7443); withHTTP also offers h2
// and http/1.1, for a port shared with HTTPS.
func TLSConfig(base *tls.Config, withHTTP bool) *tls.Config {
	c := base.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	if c.CipherSuites == nil {
		c.CipherSuites = []uint16{ // TLS 1.2; TLS 1.3 suites are all AEAD and not configurable
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	c.NextProtos = []string{ALPNTURN}
	if withHTTP {
		// Server preference: coturn's client offers http/1.1 before stun.turn.
		c.NextProtos = []string{ALPNTURN, ALPNHTTP2, ALPNHTTP11}
	}
	return c
}

// Config configures a Mux.
type Config struct {
	// TLS is the port's TLS configuration (from TLSConfig); nil: no TLS on this port.
	TLS *tls.Config
	// TURNTCP accepts plain TURN over TCP on the port too.
	TURNTCP bool
	// HTTPS hands TLS connections that speak HTTP to the HTTPS listener; without it every
	// TLS connection is TURN.
	HTTPS bool
	// Timeout bounds the wait for a connection's first bytes and the TLS handshake; zero
	// means 10 s.
	Timeout time.Duration
	// MaxPending bounds connections being classified or handshaken at once; beyond, new
	// ones are closed. Zero means 1024.
	MaxPending int
}

// Mux serves one listening port and hands each connection to the listener it belongs to.
type Mux struct {
	ln      net.Listener
	cfg     Config
	tcp     *queue // plain TURN (first bytes replayed)
	turnTLS *queue // TURN over TLS, handshaken
	https   *queue // HTTPS, handshaken
	pending chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
}

// New starts classifying connections accepted on ln. Close stops it and closes ln.
func New(ln net.Listener, cfg Config) *Mux {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{ln: ln, cfg: cfg, pending: make(chan struct{}, cfg.MaxPending), cancel: cancel}
	if cfg.TURNTCP {
		m.tcp = newQueue(ln.Addr())
	}
	if cfg.TLS != nil {
		m.turnTLS = newQueue(ln.Addr())
		if cfg.HTTPS {
			m.https = newQueue(ln.Addr())
		}
	}
	m.wg.Go(func() { m.accept(ctx) })
	return m
}

// TURNTCP returns the listener of plain TURN connections, or nil when not enabled.
func (m *Mux) TURNTCP() net.Listener { return listenerOrNil(m.tcp) }

// TURNTLS returns the listener of TURN-over-TLS connections (handshaken), or nil.
func (m *Mux) TURNTLS() net.Listener { return listenerOrNil(m.turnTLS) }

// HTTPS returns the listener of HTTPS connections (handshaken), or nil.
func (m *Mux) HTTPS() net.Listener { return listenerOrNil(m.https) }

func listenerOrNil(q *queue) net.Listener {
	if q == nil {
		return nil
	}
	return q
}

// Addr returns the shared port's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Close stops accepting, ends connections still being classified, closes the port and the
// listeners it feeds, and waits for its goroutines.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		m.cancel()
		err = m.ln.Close()
		m.wg.Wait()
		for _, q := range []*queue{m.tcp, m.turnTLS, m.https} {
			if q != nil {
				_ = q.Close()
			}
		}
	})
	return err
}

func (m *Mux) accept(ctx context.Context) {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			select { // out of descriptors and the like: wait rather than spin
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return
			}
		}
		select {
		case m.pending <- struct{}{}:
		default:
			_ = c.Close() // too many connections in classification
			continue
		}
		m.wg.Go(func() {
			defer func() { <-m.pending }()
			m.route(ctx, c)
		})
	}
}

// route classifies one connection and hands it over, or closes it. The first byte decides:
// 0x16 opens a TLS ClientHello; 0x00-0x01 a STUN message, plain TURN (RFC 7983
// demultiplexing); anything else is closed. After a TLS
// handshake, ALPN stun.turn means TURN and h2 means HTTP; with http/1.1 or no ALPN (browsers'
// TURN clients send none; coturn's offers http/1.1 before stun.turn) the first byte inside
// TLS decides the same way: STUN is TURN, anything else HTTP.
func (m *Mux) route(ctx context.Context, c net.Conn) {
	first, err := firstByte(ctx, c, m.cfg.Timeout)
	if err != nil {
		_ = c.Close()
		return
	}
	conn := net.Conn(&replayConn{Conn: c, first: first})
	switch {
	case first[0] == 0x16 && m.turnTLS != nil:
		m.routeTLS(ctx, conn)
	case isTURN(first[0]) && m.tcp != nil:
		m.tcp.deliver(ctx, conn)
	default:
		_ = c.Close()
	}
}

func (m *Mux) routeTLS(ctx context.Context, c net.Conn) {
	tc := tls.Server(c, m.cfg.TLS)
	hctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = tc.Close()
		return
	}
	if m.https == nil {
		m.turnTLS.deliver(ctx, tc)
		return
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case ALPNTURN:
		m.turnTLS.deliver(ctx, tc)
		return
	case ALPNHTTP2:
		m.https.deliver(ctx, tc)
		return
	}
	first, err := firstByte(ctx, tc, m.cfg.Timeout)
	if err != nil {
		_ = tc.Close()
		return
	}
	conn := &replayConn{Conn: tc, first: first}
	if isTURN(first[0]) {
		m.turnTLS.deliver(ctx, conn)
	} else {
		m.https.deliver(ctx, conn)
	}
}

// isTURN reports whether b can start a TURN stream. Every TURN client opens with a STUN
// request (an Allocate, or a Binding), whose first byte is 0x00 or 0x01 (RFC 7983); ChannelData
// (0x40-0x7F, where 'G' and 'P' of HTTP methods also fall) only follows an allocation.
func isTURN(b byte) bool { return b <= 0x01 }

// firstByte reads one byte within timeout; ctx ends the wait early.
func firstByte(ctx context.Context, c net.Conn, timeout time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Time{})
	return b, nil
}

// replayConn returns the bytes already read from Conn before reading on.
type replayConn struct {
	net.Conn
	first []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the underlying connection (a *tls.Conn for TLS connections), for callers
// that want its connection state.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// queue is a net.Listener fed by the Mux.
type queue struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newQueue(addr net.Addr) *queue {
	return &queue{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands c to whoever accepts, or closes it when the listener or the mux closed.
func (q *queue) deliver(ctx context.Context, c net.Conn) {
	select {
	case q.conns <- c:
	case <-q.done:
		_ = c.Close()
	case <-ctx.Done():
		_ = c.Close()
	}
}

func (q *queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *queue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *queue) Addr() net.Addr { return q.addr }
