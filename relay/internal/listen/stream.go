package listen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// streamListener accepts TURN clients over TCP or TLS on one listening socket, within the
// per-source and total connection caps, and serves each connection on its own goroutine.
type streamListener struct {
	l          *Listeners
	ln         net.Listener
	transport  wire.Transport
	handshakes chan struct{} // TLS: bounds concurrent handshakes
	lastWarn   time.Time
}

func (s *streamListener) acceptLoop(ctx context.Context) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little rather than spin, and say
			// so once a minute, not on every attempt.
			if now := time.Now(); now.Sub(s.lastWarn) > time.Minute {
				s.lastWarn = now
				s.l.log.Warn("accept failed; retrying", "transport", s.transport.String(), "err", errors.Unwrap(err))
			}
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-s.l.done:
				return
			}
		}
		remote := sockopt.AddrPort(c.RemoteAddr())
		if reason := s.l.conns.acquire(remote.Addr()); reason != "" {
			s.l.cfg.Stats.ConnsRefused.WithLabelValues(reason).Inc()
			_ = c.Close()
			continue
		}
		tc, pending := c.(*tls.Conn)
		if pending && !tc.ConnectionState().HandshakeComplete {
			select {
			case s.handshakes <- struct{}{}:
			default:
				s.l.cfg.Stats.ConnsRefused.WithLabelValues(stats.RefusedHandshakes).Inc()
				s.l.conns.release(remote.Addr())
				_ = c.Close()
				continue
			}
		} else {
			pending = false
		}
		sc := &streamConn{s: s, conn: c, remote: remote, release: func() { s.l.conns.release(remote.Addr()) }}
		s.l.open.add(sc)
		s.l.wg.Go(func() { sc.serve(ctx, pending) })
	}
}

// streamConn frames one client's TCP/TLS stream (RFC 8656 §12.5, RFC 8489 §6.2.2): it reads
// many frames per system call, relays ChannelData and Send indications, and answers control
// messages in order.
type streamConn struct {
	s       *streamListener
	conn    net.Conn
	remote  netip.AddrPort
	key     alloc.Key
	buf     []byte
	r, w    int
	alloc   *alloc.Allocation
	release func()
}

const (
	streamBufLen = 4096
	// maxStreamFrame is the largest frame: a STUN message of the largest length a header
	// can give (65532, a multiple of 4) with its header; a padded ChannelData (65540) is
	// smaller.
	maxStreamFrame = wire.HeaderLen + 65532
)

// serve runs the connection until it closes; handshake first completes a TLS handshake,
// which ctx ends early.
func (c *streamConn) serve(ctx context.Context, handshake bool) {
	l := c.s.l
	defer func() {
		l.open.remove(c)
		_ = c.conn.Close()
		c.release()
	}()
	if handshake {
		ok := c.handshake(ctx)
		<-c.s.handshakes
		if !ok {
			return
		}
	}
	c.key = alloc.Key{Transport: c.s.transport, Client: c.remote, Server: sockopt.AddrPort(c.conn.LocalAddr())}
	c.buf = make([]byte, streamBufLen)
	c.idle()
	bound := c.frames()
	if a := l.cfg.Table.Lookup(c.key); a != nil {
		l.cfg.Table.End(a, alloc.EndConnClosed) // RFC 8656 §3.1: the allocation lives with its connection (C31)
	}
	if bound != nil {
		l.cfg.Table.Splice(&leftover{conn: c.conn, rest: c.buf[c.r:c.w]}, bound)
	}
}

func (c *streamConn) handshake(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	return c.conn.(*tls.Conn).HandshakeContext(ctx) == nil
}

// idle sets the read deadline for the connection's state: none while it holds an
// allocation (the allocation's lifetime governs), IdleTimeout from now without one.
// Setting a deadline also ends a Read already blocked.
func (c *streamConn) idle() {
	if c.s.l.cfg.Table.Lookup(c.key) != nil {
		_ = c.conn.SetReadDeadline(time.Time{})
		return
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(c.s.l.cfg.IdleTimeout))
}

// frames reads and dispatches frames until the connection fails or a ConnectionBind binds
// it to a peer connection, which it then returns.
func (c *streamConn) frames() *alloc.PeerConn {
	cfg := &c.s.l.cfg
	ob := cfg.Table.NewOutbox()
	src := &control.Source{Key: c.key, Reply: c.reply,
		Client: alloc.Client{Addr: c.remote, Stream: c.conn, Ended: c.idle}}
	for {
		kind, size, plen := wire.NextFrame(c.buf[c.r:c.w], true)
		switch kind {
		case wire.FrameIncomplete:
			ob.Flush()
			if c.fill() != nil {
				return nil
			}
			continue
		case wire.FrameInvalid:
			cfg.Stats.Drop(stats.DropMalformed)
			return nil // not STUN or ChannelData: the stream is lost, close it
		}
		frame := c.buf[c.r : c.r+size]
		c.r += size
		switch {
		case kind == wire.FrameChannelData:
			if a := c.allocation(); a != nil {
				ob.ChannelData(a, wire.Be16(frame), frame[wire.ChannelHeaderLen:wire.ChannelHeaderLen+plen])
			}
		case wire.Be16(frame) == wire.TypeSendIndication:
			if a := c.allocation(); a != nil {
				ob.SendIndication(a, frame)
			}
		default:
			ob.Flush() // keep data and control in order
			if bound := cfg.Control.Handle(frame, src); bound != nil {
				_ = c.conn.SetReadDeadline(time.Time{})
				return bound
			}
			c.idle()
		}
	}
}

// allocation returns the connection's allocation, counting a drop when there is none.
func (c *streamConn) allocation() *alloc.Allocation {
	if c.alloc == nil || c.alloc.Ended() {
		c.alloc = c.s.l.cfg.Table.Lookup(c.key)
	}
	if c.alloc == nil {
		c.s.l.cfg.Stats.Drop(stats.DropNoAllocation)
	}
	return c.alloc
}

func (c *streamConn) reply(b []byte) { _, _ = c.conn.Write(b) }

// fill reads more bytes so that at least one frame can be parsed. The buffer grows up to
// maxStreamFrame for large frames and shrinks back to streamBufLen afterwards. Frames still
// queued in an outbox point into the buffer, so the caller flushes before filling.
func (c *streamConn) fill() error {
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
				return fmt.Errorf("relay: frame larger than %d bytes", maxStreamFrame)
			}
			nb := make([]byte, min(2*len(c.buf), maxStreamFrame))
			c.w = copy(nb, c.buf[c.r:c.w])
			c.r = 0
			c.buf = nb
		}
	}
	n, err := c.conn.Read(c.buf[c.w:])
	c.w += n
	if err != nil && n == 0 {
		return err
	}
	return nil
}

// leftover is a bound data connection (RFC 6062): the bytes already read behind the
// ConnectionBind go first.
type leftover struct {
	conn net.Conn
	rest []byte
}

func (l *leftover) Read(p []byte) (int, error) {
	if len(l.rest) > 0 {
		n := copy(p, l.rest)
		l.rest = l.rest[n:]
		return n, nil
	}
	return l.conn.Read(p)
}

func (l *leftover) Write(p []byte) (int, error) { return l.conn.Write(p) }
func (l *leftover) Close() error                { return l.conn.Close() }

var _ io.ReadWriteCloser = (*leftover)(nil)
