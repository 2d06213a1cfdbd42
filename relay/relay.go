// Package relay is Ferry's TURN/STUN server (RFC 8656, RFC 8489, RFC 6062): it answers the
// control plane itself on pion/stun and relays application data on sockets the caller opens.
//
// It is built from rooms under internal/, each with one job:
//
//	internal/control  the control plane: decodes, authenticates and answers requests
//	internal/alloc    the allocation table and data path: allocations by 5-tuple, their
//	                  permissions, channels, relay sockets and traffic, the quotas; the
//	                  bandwidth caps apply in Allocation.account, which every relayed batch
//	                  passes once
//	internal/listen   client-facing sockets: UDP readers, TCP/TLS framing, connection caps
//	internal/sockopt  socket options: SO_REUSEPORT groups, buffers
//	internal/wire     leaf: STUN/TURN framing on the data path, without allocating
//	internal/policy   leaf: which peer addresses may be reached
//	internal/bucket   leaf: the lock-free token bucket of caps and paces
//	internal/stats    leaf: the Prometheus collectors
package relay

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/control"
	"github.com/ferryrelay/ferry/relay/internal/listen"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config's zero values.
const (
	DefaultAllocationLifetime  = control.DefaultLifetime    // 10 min, RFC 8656 §7.2
	DefaultMaxLifetime         = control.DefaultMaxLifetime // 1 h
	DefaultNonceLifetime       = control.DefaultNonceLifetime
	DefaultMaxAllocationAge    = 12 * time.Hour
	DefaultMaxPermissions      = control.DefaultMaxPermissions
	DefaultMaxChannels         = control.DefaultMaxChannels
	DefaultMaxConnectionsPerIP = listen.DefaultMaxConnectionsPerIP
	DefaultMaxConnections      = listen.DefaultMaxConnections
	DefaultUnauthRate          = control.DefaultUnauthRate
	DefaultUnauthBurst         = control.DefaultUnauthBurst
	DefaultSweepInterval       = time.Second
	// DefaultMaxAllocationsPerUser: a browser allocates once per TURN URL it is given (Ferry
	// hands out up to three: UDP, TCP, TLS) and per network interface, and an ICE restart
	// allocates again before the old allocations go.
	DefaultMaxAllocationsPerUser = 8
	// DefaultBitrateBurst is the depth of the bandwidth caps' buckets, as time at their rate.
	DefaultBitrateBurst = 200 * time.Millisecond
)

// Config configures a Server. The caller (cmd/ferry, tests, benchmarks) opens the listening
// sockets; the Server opens relay sockets in [PortMin, PortMax] on the relay IPs itself.
type Config struct {
	// Realm is the long-term credential realm (RFC 8489 §9.2). Required.
	Realm string
	// Auth verifies credentials. Required.
	Auth *auth.Authenticator

	// UDP lists the UDP listen addresses; each is one or more sockets bound to the same
	// address with SO_REUSEPORT (ListenUDP), each read by its own goroutine.
	UDP [][]*net.UDPConn
	// TCP lists TURN-over-TCP listeners. TLS lists TURN-over-TLS listeners whose Accept
	// returns a *tls.Conn not yet handshaken (tls.NewListener; Ferry handshakes within the
	// connection caps) or a connection already handshaken (a port shared with HTTPS).
	TCP, TLS []net.Listener

	// RelayIPv4 and RelayIPv6 are the addresses relay sockets bind to; an invalid address
	// disables that family. At least one is required.
	RelayIPv4, RelayIPv6 netip.Addr
	// AdvertisedIPv4 and AdvertisedIPv6 replace the bind address in XOR-RELAYED-ADDRESS for a
	// server behind 1:1 NAT; the port is preserved. Invalid means "same as the bind address".
	AdvertisedIPv4, AdvertisedIPv6 netip.Addr
	// PortMin and PortMax bound relay ports (inclusive). Zero means 49152-65535.
	PortMin, PortMax uint16

	// AllowedPeers and DeniedPeers adjust the peer policy (see the README's security
	// defaults): allowed CIDRs open default-denied ranges, denied CIDRs win over everything.
	AllowedPeers, DeniedPeers []netip.Prefix
	// HostIPs are this host's own addresses, denied as peers. Nil means: the addresses of
	// all network interfaces plus the listener and relay addresses.
	HostIPs []netip.Addr
	// ServicePorts are Ferry's other ports (HTTP, admin); the TURN listener ports are added
	// automatically. They stay unreachable on host addresses even when a peer range that
	// includes them is allowed.
	ServicePorts []uint16

	// TCPAllocations enables RFC 6062 TCP allocations (REQUESTED-TRANSPORT TCP).
	TCPAllocations bool
	// LegacyChannelNumbers accepts ChannelBind for 0x5000-0x7FFF too (the RFC 5766 range
	// that older clients such as coturn 4.6's turnutils_uclient still pick).
	LegacyChannelNumbers bool
	// StrictAddressFamily allocates IPv4 when REQUESTED-ADDRESS-FAMILY is absent (RFC 8656
	// §7.2); otherwise the relay follows the family of the listener the client used.
	StrictAddressFamily bool

	// NonceLifetime is how long a nonce is valid before 438 (RFC 8489 §9.2.4); zero: 1 h.
	NonceLifetime time.Duration
	// AllocationLifetime is the lifetime granted without LIFETIME and the least one granted
	// (zero: 600 s); MaxLifetime caps a requested one (zero: 3600 s). RFC 8656 §7.2.
	AllocationLifetime, MaxLifetime time.Duration
	// PermissionLifetime (300 s) and ChannelLifetime (600 s) are RFC 8656's (§9, §12);
	// zero means those. Tests shorten them.
	PermissionLifetime, ChannelLifetime time.Duration
	// MaxAllocationAge ends every allocation at this age; credentials that expire during a
	// call are honoured until then. Zero means DefaultMaxAllocationAge.
	MaxAllocationAge time.Duration
	// Limits are the quotas, bandwidth caps and paces (SetLimits changes them later).
	Limits
	// IdleTimeout closes a TCP/TLS connection that has no allocation this long after it
	// opened (or its allocation ended), however slowly it trickles bytes. Zero means 60 s.
	IdleTimeout time.Duration
	// MaxConnectionsPerIP and MaxConnections cap TCP/TLS connections (pending TLS handshakes
	// included) per source IP and in total; beyond, new connections are closed at once.
	// Zero means the defaults; negative means no cap.
	MaxConnectionsPerIP, MaxConnections int
	// Events receives allocation lifecycle events (the allocation log); nil discards them.
	Events EventSink
	// Registerer receives the relay's metrics; nil means a private registry. A failed New
	// leaves nothing registered.
	Registerer prometheus.Registerer
	// NoPacketMetrics skips the per-packet byte and packet counters (the metrics stay
	// registered, at zero). For benchmarks that measure what counting costs.
	NoPacketMetrics bool
	// RelaySocketBuffer is the receive and send buffer, in bytes, of each UDP relay socket;
	// 0 keeps the kernel default. It absorbs a peer's burst, such as a video key frame.
	RelaySocketBuffer int
	// NoGSO sends bursts with sendmmsg only, never as one UDP GSO (UDP_SEGMENT) send.
	NoGSO bool
	// Logger gets Ferry's log lines (never an address or a username); nil discards.
	Logger *slog.Logger
	// Now is the clock for nonces, credentials, lifetimes and ages; nil means time.Now.
	Now func() time.Time
	// SweepInterval is how often lifetimes are checked; zero means 1 s.
	SweepInterval time.Duration
}

// Server is a running TURN/STUN server.
type Server struct {
	cfg       Config // as New was given it (with defaults): peer policy rebuilds read it
	table     *alloc.Table
	control   *control.Handler
	listeners *listen.Listeners
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New starts a Server on the sockets in cfg. On error nothing is left running and nothing
// registered, but the caller still owns (and closes) the sockets it passed.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	reg := &undoRegisterer{Registerer: cmp.Or[prometheus.Registerer](cfg.Registerer, prometheus.NewRegistry())}
	srv, err := build(cfg, reg)
	if err != nil {
		reg.undo()
		return nil, err
	}
	srv.wg.Go(func() { srv.sweeper(cfg.SweepInterval) })
	return srv, nil
}

// build wires the rooms together.
func build(cfg Config, reg prometheus.Registerer) (*Server, error) {
	st, err := stats.New(reg, !cfg.NoPacketMetrics)
	if err != nil {
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	table, err := alloc.NewTable(alloc.Config{Realm: cfg.Realm,
		RelayIPv4: cfg.RelayIPv4, RelayIPv6: cfg.RelayIPv6,
		AdvertisedIPv4: cfg.AdvertisedIPv4, AdvertisedIPv6: cfg.AdvertisedIPv6,
		PortMin: cfg.PortMin, PortMax: cfg.PortMax, Policy: peerPolicy(cfg),
		ServicePorts: servicePorts(cfg), MaxAllocationAge: cfg.MaxAllocationAge,
		RelaySocketBuffer: cfg.RelaySocketBuffer, NoGSO: cfg.NoGSO, Events: cfg.Events,
		Stats: st, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	ctrl, err := control.New(control.Config{Realm: cfg.Realm, Auth: cfg.Auth, Table: table, Stats: st,
		NonceLifetime: cfg.NonceLifetime, DefaultLifetime: cfg.AllocationLifetime, MaxLifetime: cfg.MaxLifetime,
		PermissionLifetime: cfg.PermissionLifetime, ChannelLifetime: cfg.ChannelLifetime,
		Limits:         cfg.Limits.control(),
		TCPAllocations: cfg.TCPAllocations, LegacyChannelNumbers: cfg.LegacyChannelNumbers,
		StrictAddressFamily: cfg.StrictAddressFamily || !cfg.RelayIPv6.IsValid(),
		Now:                 cfg.Now, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	ls, err := listen.Start(listen.Config{UDP: cfg.UDP, TCP: cfg.TCP, TLS: cfg.TLS, Table: table,
		Control: ctrl, Stats: st, IdleTimeout: cfg.IdleTimeout, MaxConnectionsPerIP: cfg.MaxConnectionsPerIP,
		MaxConnections: cfg.MaxConnections, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_turn_connections_active",
		Help: "TCP/TLS client connections open now (pending TLS handshakes included).",
	}, func() float64 { return float64(ls.ActiveConnections()) })); err != nil {
		_ = ls.Close()
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	return &Server{cfg: cfg, table: table, control: ctrl, listeners: ls, stop: make(chan struct{})}, nil
}

// validate reports every problem of cfg at once.
func (c *Config) validate() error {
	var errs []error
	if c.Realm == "" {
		errs = append(errs, errors.New("relay: realm is required"))
	}
	if c.Auth == nil {
		errs = append(errs, errors.New("relay: an authenticator is required"))
	}
	if !c.RelayIPv4.IsValid() && !c.RelayIPv6.IsValid() {
		errs = append(errs, errors.New("relay: a relay IPv4 or IPv6 address is required"))
	}
	if c.RelayIPv4.IsValid() && !c.RelayIPv4.Unmap().Is4() || c.RelayIPv6.IsValid() && !c.RelayIPv6.Is6() {
		errs = append(errs, errors.New("relay: relay addresses must match their family"))
	}
	if c.RelayIPv4.IsUnspecified() || c.RelayIPv6.IsUnspecified() {
		errs = append(errs, errors.New("relay: a relay address must be a specific address, not the unspecified address"))
	}
	if len(c.UDP) == 0 && len(c.TCP) == 0 && len(c.TLS) == 0 {
		errs = append(errs, errors.New("relay: no listeners"))
	}
	for i, g := range c.UDP {
		if len(g) == 0 || slices.Contains(g, nil) {
			errs = append(errs, fmt.Errorf("relay: UDP listen address %d has no sockets, or a nil one", i))
		}
	}
	if slices.Contains(c.TCP, nil) || slices.Contains(c.TLS, nil) {
		errs = append(errs, errors.New("relay: a nil TCP or TLS listener"))
	}
	if (c.PortMin != 0 || c.PortMax != 0) && (c.PortMin == 0 || c.PortMin > c.PortMax) {
		errs = append(errs, fmt.Errorf("relay: bad relay port range %d-%d", c.PortMin, c.PortMax))
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.PortMin == 0 && c.PortMax == 0 {
		c.PortMin, c.PortMax = 49152, 65535
	}
	c.RelayIPv4, c.RelayIPv6 = policy.Canon(c.RelayIPv4), policy.Canon(c.RelayIPv6)
	c.MaxAllocationAge = cmp.Or(c.MaxAllocationAge, DefaultMaxAllocationAge)
	c.SweepInterval = cmp.Or(c.SweepInterval, DefaultSweepInterval)
}

// peerPolicy builds the peer policy: the relay IPs (bind and advertised) are reachable only
// at live relayed transport addresses; this host's addresses are denied.
func peerPolicy(cfg Config) *policy.Policy {
	hostIPs := cfg.HostIPs
	if hostIPs == nil {
		hostIPs = interfaceIPs()
	}
	for _, socks := range cfg.UDP {
		hostIPs = append(hostIPs, sockopt.AddrPort(socks[0].LocalAddr()).Addr())
	}
	for _, ln := range append(append([]net.Listener(nil), cfg.TCP...), cfg.TLS...) {
		hostIPs = append(hostIPs, sockopt.AddrPort(ln.Addr()).Addr())
	}
	hostIPs = append(hostIPs, cfg.RelayIPv4, cfg.RelayIPv6)
	relayIPs := []netip.Addr{cfg.RelayIPv4, cfg.AdvertisedIPv4, cfg.RelayIPv6, cfg.AdvertisedIPv6}
	return policy.New(cfg.AllowedPeers, cfg.DeniedPeers, relayIPs, hostIPs)
}

// servicePorts are Ferry's own ports: the configured ones and every TURN listener's.
func servicePorts(cfg Config) []uint16 {
	ports := append([]uint16(nil), cfg.ServicePorts...)
	for _, socks := range cfg.UDP {
		ports = append(ports, sockopt.AddrPort(socks[0].LocalAddr()).Port())
	}
	for _, ln := range append(append([]net.Listener(nil), cfg.TCP...), cfg.TLS...) {
		ports = append(ports, sockopt.AddrPort(ln.Addr()).Port())
	}
	return ports
}

// interfaceIPs returns the addresses of this host's network interfaces.
func interfaceIPs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// sweeper ends expired allocations, permissions and channels every interval.
func (s *Server) sweeper(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Sweep ends allocations whose lifetime ran out or that reached the maximum age, and removes
// expired permissions and channel bindings (by the injected clock). A goroutine calls it
// every SweepInterval; tests call it after moving a fake clock.
func (s *Server) Sweep() { s.table.Sweep() }

// Close stops the server: it ends every allocation (end reason "shutdown"), closes the
// listening sockets and client connections, and waits for every goroutine it started. It
// is idempotent and returns the joined close errors.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.table.Close()
		s.closeErr = s.listeners.Close()
	})
	return s.closeErr
}

// AllocationCount returns the number of live allocations.
func (s *Server) AllocationCount() int { return s.table.Count() }

// Ready reports whether the server is serving (not closed).
func (s *Server) Ready() bool {
	select {
	case <-s.stop:
		return false
	default:
		return true
	}
}

// undoRegisterer remembers what it registered, so that a failed New can take it back.
type undoRegisterer struct {
	prometheus.Registerer
	done []prometheus.Collector
}

func (u *undoRegisterer) Register(c prometheus.Collector) error {
	if err := u.Registerer.Register(c); err != nil {
		return err
	}
	u.done = append(u.done, c)
	return nil
}

func (u *undoRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := u.Register(c); err != nil {
			panic(err)
		}
	}
}

func (u *undoRegisterer) undo() {
	for _, c := range u.done {
		u.Registerer.Unregister(c)
	}
}
