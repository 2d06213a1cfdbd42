// Package listen serves the relay's client-facing sockets: UDP listener sockets read in
// batches, and TCP/TLS connections framed into STUN and ChannelData messages (RFC 8656
// §12.5, RFC 8489 §6.2.2), within connection caps. It hands application data to the
// allocation table's data path and control messages to the control plane.
package listen

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// Defaults for Config's zero values.
const (
	DefaultIdleTimeout         = 60 * time.Second
	DefaultMaxConnectionsPerIP = 256
	DefaultMaxConnections      = 16384
	// tlsHandshakeTimeout bounds a TLS handshake.
	tlsHandshakeTimeout = 10 * time.Second
	// maxPendingHandshakes bounds concurrent TLS handshakes per listener; one source may hold
	// at most its connection cap's share of them.
	maxPendingHandshakes = 1024
)

// Config configures the listeners.
type Config struct {
	// UDP lists the UDP listen addresses; each is one or more sockets bound to one address
	// with SO_REUSEPORT, each read by its own goroutine.
	UDP [][]*net.UDPConn
	// TCP lists TURN-over-TCP listeners; TLS lists TURN-over-TLS listeners, whose Accept
	// returns *tls.Conn (Ferry completes the handshake) or a connection already handshaken
	// by a port shared with HTTPS.
	TCP, TLS []net.Listener
	Table    *alloc.Table     // required
	Control  *control.Handler // required
	Stats    *stats.Relay     // required
	// IdleTimeout closes a TCP/TLS connection that has no allocation this long after it
	// opened (or its allocation ended), however slowly it trickles bytes.
	IdleTimeout time.Duration
	// MaxConnectionsPerIP and MaxConnections cap TCP/TLS connections (pending TLS handshakes
	// included) per source IP and in total; negative means no cap.
	MaxConnectionsPerIP, MaxConnections int
	Logger                              *slog.Logger
}

// Listeners is the running set of client-facing sockets.
type Listeners struct {
	cfg     Config
	log     *slog.Logger
	udp     udpEngine
	streams []*streamListener
	conns   *connLimits
	open    connSet
	wg      sync.WaitGroup
	done    chan struct{}
	cancel  context.CancelFunc // ends pending TLS handshakes on Close
	once    sync.Once
}

// Start starts serving every socket in cfg. The caller keeps ownership of the sockets: Close
// closes them.
func Start(cfg Config) (*Listeners, error) {
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.MaxConnectionsPerIP = cmp.Or(cfg.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	cfg.MaxConnections = cmp.Or(cfg.MaxConnections, DefaultMaxConnections)
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listeners{cfg: cfg, log: cfg.Logger, conns: newConnLimits(cfg.MaxConnectionsPerIP, cfg.MaxConnections),
		done: make(chan struct{}), cancel: cancel}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.UDP) > 0 {
		u, err := startUDP(l, cfg.UDP)
		if err != nil {
			cancel()
			return nil, err
		}
		l.udp = u
	}
	for _, ln := range cfg.TCP {
		l.streams = append(l.streams, &streamListener{l: l, ln: ln, transport: wire.TCP})
	}
	for _, ln := range cfg.TLS {
		l.streams = append(l.streams, &streamListener{l: l, ln: ln, transport: wire.TLS,
			handshakes: make(chan struct{}, maxPendingHandshakes)})
	}
	for _, s := range l.streams {
		l.wg.Go(func() { s.acceptLoop(ctx) })
	}
	return l, nil
}

// Addrs returns the local addresses served, by transport.
func (l *Listeners) Addrs() (udp, tcp, tls []netip.AddrPort) {
	if l.udp != nil {
		udp = l.udp.addrs()
	}
	for _, s := range l.streams {
		ap := sockopt.AddrPort(s.ln.Addr())
		if s.transport == wire.TLS {
			tls = append(tls, ap)
		} else {
			tcp = append(tcp, ap)
		}
	}
	return udp, tcp, tls
}

// ActiveConnections returns the TCP/TLS client connections open now (pending handshakes
// included).
func (l *Listeners) ActiveConnections() int { return l.conns.active() }

// Close closes every socket and connection and waits for every goroutine it started. It is
// idempotent.
func (l *Listeners) Close() error {
	var errs []error
	l.once.Do(func() {
		close(l.done)
		l.cancel()
		if l.udp != nil {
			errs = append(errs, l.udp.close())
		}
		for _, s := range l.streams {
			errs = append(errs, ignoreClosed(s.ln.Close()))
		}
		l.open.closeAll()
		l.wg.Wait()
		if l.udp != nil {
			errs = append(errs, l.udp.release())
		}
	})
	return errors.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// connSet tracks open client connections, so Close can end them.
type connSet struct {
	mu sync.Mutex
	m  map[*streamConn]struct{}
}

func (s *connSet) add(c *streamConn) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[*streamConn]struct{}{}
	}
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c *streamConn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	conns := make([]*streamConn, 0, len(s.m))
	for c := range s.m {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.conn.Close()
	}
}
