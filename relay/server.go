// Package relay is Ferry's TURN/STUN server (RFC 8656, RFC 8489): pion/turn's control plane
// behind Ferry's own sockets, peer policy, credential policy and data path.
package relay

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config's zero values.
const (
	DefaultAllocationLifetime  = 10 * time.Minute // RFC 8656 §7.2 (LIFETIME absent)
	DefaultPermissionLifetime  = 5 * time.Minute  // RFC 8656 §9
	DefaultChannelLifetime     = 10 * time.Minute // RFC 8656 §12
	DefaultMaxAllocationAge    = 12 * time.Hour
	DefaultMaxPermissions      = 64 // a call needs a handful: the peer's candidates
	DefaultMaxConnectionsPerIP = 256
	DefaultMaxConnections      = 16384
	DefaultUnauthRate          = 20 // unauthenticated responses per second per source IP
	DefaultUnauthBurst         = 40
	// inboundMTU is pion's per-read buffer: the largest control message Ferry hands to pion.
	// (Peer datagrams never reach pion; Ferry reads them, up to peerBuf bytes.)
	inboundMTU = 1600
)

// Config configures a Server. The caller (cmd/ferry, tests, benchmarks) opens the listening
// sockets; the Server opens relay sockets in [PortMin, PortMax] on the relay IPs itself.
type Config struct {
	// Realm is the long-term credential realm (RFC 8489 §9.2). Required.
	Realm string
	// Auth verifies credentials. Required.
	Auth *auth.Authenticator

	// UDP lists the UDP listen addresses; each is one or more sockets bound to the same
	// address with SO_REUSEPORT.
	UDP [][]*net.UDPConn
	// TCP lists plain TCP listeners; TLS lists TCP listeners that speak TLS with TLSConfig.
	TCP       []net.Listener
	TLS       []net.Listener
	TLSConfig *tls.Config
	// SharedTLS lists TLS listeners that also serve HTTPS (one port 443 for both): a
	// connection whose ALPN is h2 or http/1.1, or that offered no ALPN and whose first byte
	// cannot start a STUN message, is handed to HTTPHandoff after the handshake; ALPN
	// stun.turn (RFC 7443) or a first STUN message makes it TURN. TLSConfig serves them too:
	// its GetCertificate picks the certificate by SNI.
	SharedTLS []net.Listener
	// HTTPHandoff takes ownership of the HTTPS connections of SharedTLS listeners (already
	// handshaken, a *tls.Conn unless its first byte had to be read). Required with SharedTLS.
	HTTPHandoff func(net.Conn)

	// RelayIPv4 and RelayIPv6 are the addresses relay sockets bind to; an invalid address
	// disables that family. At least one is required.
	RelayIPv4, RelayIPv6 netip.Addr
	// AdvertisedIPv4 and AdvertisedIPv6 replace the bind address in XOR-RELAYED-ADDRESS for a
	// server behind 1:1 NAT; the port is preserved. Invalid means "same as the bind address".
	AdvertisedIPv4, AdvertisedIPv6 netip.Addr
	// PortMin and PortMax bound relay ports (inclusive). Zero means 49152-65535.
	PortMin, PortMax uint16

	// AllowedPeers and DeniedPeers adjust the peer policy (see PeerPolicy).
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

	// Lifetimes; zero means the Default* value. AllocationLifetime is the default LIFETIME.
	AllocationLifetime, PermissionLifetime, ChannelLifetime time.Duration
	// MaxAllocationAge ends every allocation at this age; credentials that expire during a
	// call are honoured until then. Zero means DefaultMaxAllocationAge.
	MaxAllocationAge time.Duration
	// MaxPermissions caps the peer IP addresses one allocation may hold permissions for;
	// CreatePermission beyond gets 508 (RFC 8656 §9.2). Zero means DefaultMaxPermissions.
	MaxPermissions int
	// IdleTimeout closes a TCP/TLS connection that has no allocation this long after it
	// opened (or its allocation ended), however slowly it trickles bytes. Zero means 60 s.
	IdleTimeout time.Duration
	// MaxConnectionsPerIP and MaxConnections cap TCP/TLS connections (pending TLS handshakes
	// included) per source IP and in total; beyond, new connections are closed at once.
	// Zero means the defaults; negative means no cap.
	MaxConnectionsPerIP, MaxConnections int
	// MaxAllocations caps concurrent allocations (0: no cap); MaxAllocationsPerUser caps
	// them per user id (0: no cap). Excess Allocate requests get 486 (RFC 8656 §7.2).
	MaxAllocations, MaxAllocationsPerUser int
	// UnauthRate (per second) and UnauthBurst bound unauthenticated responses per source IP.
	// Zero means the defaults; a negative rate disables the limit.
	UnauthRate  float64
	UnauthBurst int

	// Events receives allocation lifecycle events (the allocation log); nil discards them.
	Events EventSink
	// Registerer receives the relay's metrics; nil means a private registry.
	Registerer prometheus.Registerer
	// NoPacketMetrics skips the per-packet byte and packet counters (the metrics stay
	// registered, at zero). For benchmarks that measure what counting costs.
	NoPacketMetrics bool
	// RelaySocketBuffer is the receive and send buffer, in bytes, of each UDP relay socket
	// (SetSocketBuffers); 0 keeps the kernel default (net.core.rmem_default). It absorbs a
	// peer's burst, such as a video key frame, while the relay is busy.
	RelaySocketBuffer int
	// NoGSO sends bursts with sendmmsg only, never as one UDP GSO (UDP_SEGMENT) send. GSO
	// is used only where the kernel supports it; this is for a kernel or NIC that
	// mishandles it, and for measuring what it brings.
	NoGSO bool
	// Logger gets Ferry's log lines (never an address or a username); nil discards.
	Logger *slog.Logger
	// Now is the clock for credential expiry and allocation age; nil means time.Now.
	Now func() time.Time
	// SweepInterval is how often the allocation age is checked; zero means 10 s.
	SweepInterval time.Duration
}

// Server is a running TURN/STUN server.
type Server struct {
	cfg          Config
	log          *slog.Logger
	now          func() time.Time
	auth         *auth.Authenticator
	policy       *PeerPolicy
	servicePorts portSet
	relays       *relayTable
	m            *relayMetrics
	events       EventSink
	unauth       *unauthLimiter
	conns        *connLimits
	quotas       quotaReservations
	pion         *turn.Server

	udp     []*udpListener
	udpByIP map[netip.AddrPort]*udpListener
	stream  []*streamListener
	streams streamTable
	allocs  allocTable
	keys    keyCache
	nonces  nonceCache
	readers peerReaders // buffers lent to relay sockets while they have data
	outs    sync.Pool   // *outbox for stream connections

	wg        sync.WaitGroup
	stop      chan struct{}
	closeOnce sync.Once
	closeErr  error

	relayMu   sync.Mutex
	relayOpen int
	relayZero *sync.Cond

	lastAllocID atomic.Uint64 // see nextAllocID
}

// New starts a Server on the sockets in cfg. On error nothing is left running, but the
// caller still owns (and closes) the sockets it passed.
func New(cfg Config) (*Server, error) {
	if cfg.Realm == "" {
		return nil, errors.New("relay: realm is required")
	}
	if cfg.Auth == nil {
		return nil, errors.New("relay: an authenticator is required")
	}
	if !cfg.RelayIPv4.IsValid() && !cfg.RelayIPv6.IsValid() {
		return nil, errors.New("relay: a relay IPv4 or IPv6 address is required")
	}
	if cfg.RelayIPv4.IsValid() && !cfg.RelayIPv4.Unmap().Is4() || cfg.RelayIPv6.IsValid() && !cfg.RelayIPv6.Is6() {
		return nil, errors.New("relay: relay addresses must match their family")
	}
	if cfg.RelayIPv4.IsUnspecified() || cfg.RelayIPv6.IsUnspecified() {
		return nil, errors.New("relay: a relay address must be a specific address, not the unspecified address")
	}
	if len(cfg.UDP) == 0 && len(cfg.TCP) == 0 && len(cfg.TLS) == 0 && len(cfg.SharedTLS) == 0 {
		return nil, errors.New("relay: no listeners")
	}
	if len(cfg.TLS)+len(cfg.SharedTLS) > 0 && cfg.TLSConfig == nil {
		return nil, errors.New("relay: TLS listeners need a TLS config")
	}
	if len(cfg.SharedTLS) > 0 && cfg.HTTPHandoff == nil {
		return nil, errors.New("relay: shared TLS listeners need an HTTP handoff")
	}
	if cfg.PortMin == 0 && cfg.PortMax == 0 {
		cfg.PortMin, cfg.PortMax = 49152, 65535
	}
	if cfg.PortMin == 0 || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("relay: bad relay port range %d-%d", cfg.PortMin, cfg.PortMax)
	}
	cfg.AllocationLifetime = cmp.Or(cfg.AllocationLifetime, DefaultAllocationLifetime)
	cfg.PermissionLifetime = cmp.Or(cfg.PermissionLifetime, DefaultPermissionLifetime)
	cfg.ChannelLifetime = cmp.Or(cfg.ChannelLifetime, DefaultChannelLifetime)
	cfg.MaxAllocationAge = cmp.Or(cfg.MaxAllocationAge, DefaultMaxAllocationAge)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, 10*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 60*time.Second)
	cfg.MaxPermissions = cmp.Or(cfg.MaxPermissions, DefaultMaxPermissions)
	cfg.MaxConnectionsPerIP = cmp.Or(cfg.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	cfg.MaxConnections = cmp.Or(cfg.MaxConnections, DefaultMaxConnections)
	cfg.UnauthRate = cmp.Or(cfg.UnauthRate, DefaultUnauthRate)
	cfg.UnauthBurst = cmp.Or(cfg.UnauthBurst, DefaultUnauthBurst)
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		now:     cfg.Now,
		auth:    cfg.Auth,
		events:  cfg.Events,
		unauth:  newUnauthLimiter(cfg.UnauthRate, cfg.UnauthBurst),
		conns:   newConnLimits(cfg.MaxConnectionsPerIP, cfg.MaxConnections),
		stop:    make(chan struct{}),
		readers: peerReaders{noGSO: cfg.NoGSO},
	}
	s.relayZero = sync.NewCond(&s.relayMu)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "relay")
	if s.now == nil {
		s.now = time.Now
	}
	if s.events == nil {
		s.events = nopSink{}
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newRelayMetrics(reg, !cfg.NoPacketMetrics)
	if err != nil {
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_turn_connections_active",
		Help: "TCP/TLS client connections open now (pending TLS handshakes included).",
	}, func() float64 { return float64(s.conns.active()) })); err != nil {
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	m.limit.WithLabelValues("total").Set(float64(cfg.MaxAllocations))
	m.limit.WithLabelValues("per_user").Set(float64(cfg.MaxAllocationsPerUser))
	s.m = m

	pub4, pub6 := cfg.AdvertisedIPv4, cfg.AdvertisedIPv6
	if !pub4.IsValid() {
		pub4 = cfg.RelayIPv4
	}
	if !pub6.IsValid() {
		pub6 = cfg.RelayIPv6
	}
	s.relays = newRelayTable(cfg.PortMin, cfg.PortMax, canon(cfg.RelayIPv4), canon(pub4), canon(cfg.RelayIPv6), canon(pub6))

	// Listeners, their addresses and ports: what the peer policy protects.
	hostIPs := cfg.HostIPs
	if hostIPs == nil {
		hostIPs = interfaceIPs()
	}
	for _, p := range cfg.ServicePorts {
		s.servicePorts.add(p)
	}
	s.udpByIP = map[netip.AddrPort]*udpListener{}
	for _, socks := range cfg.UDP {
		l, err := newUDPListener(s, socks)
		if err != nil {
			return nil, err
		}
		l.allocs.init()
		s.udp = append(s.udp, l)
		s.udpByIP[l.local] = l
		s.servicePorts.add(l.local.Port())
		hostIPs = append(hostIPs, l.local.Addr())
	}
	for _, ln := range cfg.TCP {
		s.stream = append(s.stream, newStreamListener(s, ln, TCP, nil))
	}
	for _, ln := range cfg.TLS {
		s.stream = append(s.stream, newStreamListener(s, ln, TLS, turnTLSConfig(cfg.TLSConfig, false)))
	}
	for _, ln := range cfg.SharedTLS {
		l := newStreamListener(s, ln, TLS, turnTLSConfig(cfg.TLSConfig, true))
		l.handoff = cfg.HTTPHandoff
		s.stream = append(s.stream, l)
	}
	for _, l := range s.stream {
		if ap, ok := addrPortOf(l.ln.Addr()); ok {
			s.servicePorts.add(ap.Port())
			hostIPs = append(hostIPs, ap.Addr())
		}
	}
	relayIPs := []netip.Addr{s.relays.bind4, s.relays.pub4, s.relays.bind6, s.relays.pub6}
	hostIPs = append(hostIPs, s.relays.bind4, s.relays.bind6)
	s.policy = NewPeerPolicy(cfg.AllowedPeers, cfg.DeniedPeers, relayIPs, hostIPs)

	gen := relayGen{s}
	pc := turn.ServerConfig{
		Realm:               cfg.Realm,
		AuthHandler:         s.pionAuth,
		QuotaHandler:        s.quota,
		LoggerFactory:       silentLogger{},
		ChannelBindTimeout:  cfg.ChannelLifetime,
		PermissionTimeout:   cfg.PermissionLifetime,
		AllocationLifetime:  cfg.AllocationLifetime,
		StrictAddressFamily: cfg.StrictAddressFamily || !s.relays.bind6.IsValid(),
		InboundMTU:          inboundMTU,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnPermissionCreated: s.onPermissionCreated,
			OnPermissionDeleted: s.onPermissionDeleted,
			OnChannelCreated:    s.onChannelCreated,
			OnChannelDeleted:    s.onChannelDeleted,
		},
	}
	for _, l := range s.udp {
		for i := range l.ctrls {
			pc.PacketConnConfigs = append(pc.PacketConnConfigs, turn.PacketConnConfig{
				PacketConn: udpControl{l, i}, RelayAddressGenerator: gen, PermissionHandler: s.permit})
		}
	}
	for _, l := range s.stream {
		pc.ListenerConfigs = append(pc.ListenerConfigs, turn.ListenerConfig{
			Listener: l, RelayAddressGenerator: gen, PermissionHandler: s.permit})
	}
	ps, err := turn.NewServer(pc)
	if err != nil {
		return nil, fmt.Errorf("relay: start TURN server: %w", err)
	}
	s.pion = ps
	for _, l := range s.udp {
		l.start(&s.wg)
	}
	for _, l := range s.stream {
		l.start(&s.wg)
	}
	s.wg.Go(s.janitor)
	return s, nil
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

// Close stops the server: it closes the listeners, ends every allocation (end reason
// "shutdown"), closes client connections and waits for every goroutine Ferry started and
// for pion's per-allocation readers to leave Ferry's sockets. It is idempotent and returns
// the joined close errors.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.allocs.each(func(a *alloc) { a.setEndReason(EndShutdown) })
		var errs []error
		errs = append(errs, s.pion.Close()) // closes udpControl and the stream listeners
		for _, l := range s.udp {
			errs = append(errs, l.close())
		}
		for _, l := range s.stream {
			errs = append(errs, l.Close())
		}
		s.streams.closeAll()
		s.wg.Wait()
		s.streams.wg.Wait()
		if !s.waitRelaysClosed(5 * time.Second) {
			errs = append(errs, errors.New("relay: allocations still open 5s after close"))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Server) relayOpened() {
	s.relayMu.Lock()
	s.relayOpen++
	s.relayMu.Unlock()
}

func (s *Server) relayClosed() {
	s.relayMu.Lock()
	s.relayOpen--
	if s.relayOpen == 0 {
		s.relayZero.Broadcast()
	}
	s.relayMu.Unlock()
}

// waitRelaysClosed waits until pion has closed every relay socket (it does so after its
// read loops end), or until the timeout.
func (s *Server) waitRelaysClosed(timeout time.Duration) bool {
	timer := time.AfterFunc(timeout, func() {
		s.relayMu.Lock()
		s.relayZero.Broadcast()
		s.relayMu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	s.relayMu.Lock()
	defer s.relayMu.Unlock()
	for s.relayOpen > 0 && time.Now().Before(deadline) {
		s.relayZero.Wait()
	}
	return s.relayOpen == 0
}

// AllocationCount returns the number of live allocations.
func (s *Server) AllocationCount() int { return s.allocs.len() }

// Ready reports whether the server is serving (not closed).
func (s *Server) Ready() bool {
	select {
	case <-s.stop:
		return false
	default:
		return true
	}
}

// Kill ends the allocations of a user id now (for revocation), returning how many ended.
func (s *Server) Kill(userID string) int {
	n := 0
	s.allocs.each(func(a *alloc) {
		if a.userID == userID {
			a.setEndReason(EndQuota)
			s.endAllocation(a)
			n++
		}
	})
	return n
}

// endAllocation makes pion delete an allocation by closing its relayed transport address;
// pion's reader then sees the socket closed and deletes the allocation.
func (s *Server) endAllocation(a *alloc) {
	if a.relay != nil {
		_ = a.relay.Close()
	}
	if a.relayTCP != nil {
		_ = a.relayTCP.Close()
	}
}

// janitor enforces the maximum allocation age and forgets idle rate-limit buckets.
func (s *Server) janitor() {
	t := time.NewTicker(s.cfg.SweepInterval)
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

// Sweep ends allocations older than MaxAllocationAge (by the injected clock) and drops idle
// rate-limit state. The janitor calls it every SweepInterval; tests call it directly.
func (s *Server) Sweep() {
	now := s.now()
	s.allocs.each(func(a *alloc) {
		if now.Sub(a.created) >= s.cfg.MaxAllocationAge {
			a.setEndReason(EndMaxAge)
			s.endAllocation(a)
		}
	})
	s.unauth.sweep(now)
}

// authenticate returns the long-term key for a request (RFC 8489 §9.2), or the failure
// reason. Expired REST credentials are accepted for requests other than Allocate from the
// 5-tuple's client address when an allocation created with the same username exists and is
// younger than MaxAllocationAge (the mid-call policy). With msg, each candidate password is
// tried against its MESSAGE-INTEGRITY and the match is remembered for pion's AuthHandler.
func (s *Server) authenticate(username, realm string, method stun.Method, client netip.AddrPort, msg *stun.Message) ([]byte, string) {
	if realm != s.cfg.Realm {
		return nil, auth.ReasonWrongRealm
	}
	id, err := s.auth.Lookup(username)
	if errors.Is(err, auth.ErrExpired) {
		if method == stun.MethodAllocate || !s.allocs.inGrace(client, username, s.now(), s.cfg.MaxAllocationAge) {
			return nil, auth.ReasonExpired
		}
	} else if err != nil {
		return nil, auth.Reason(err)
	}
	if msg == nil {
		if len(id.Passwords) > 1 {
			if k, ok := s.keys.get(username); ok {
				return k, ""
			}
		}
		return auth.LongTermKey(username, realm, id.Passwords[0]), ""
	}
	for _, pw := range id.Passwords {
		k := auth.LongTermKey(username, realm, pw)
		if stun.MessageIntegrity(k).Check(msg) == nil {
			if len(id.Passwords) > 1 {
				s.keys.put(username, k)
			}
			return k, ""
		}
	}
	return nil, auth.ReasonBadIntegrity
}

// pionAuth is pion's AuthHandler. The user id handed to pion is the full username, so pion
// ties an allocation to the exact credential (RFC 8656 §5).
func (s *Server) pionAuth(ra *turn.RequestAttributes) (string, []byte, bool) {
	client, _ := addrPortOf(ra.SrcAddr)
	key, reason := s.authenticate(ra.Username, ra.Realm, ra.Method, client, nil)
	if reason != "" {
		s.m.authFailures.WithLabelValues(reason).Inc()
		s.log.Debug("authentication failed", "reason", reason, "method", ra.Method.String())
		return "", nil, false
	}
	return ra.Username, key, true
}

func (s *Server) onAuth(_, _ net.Addr, _, _, _ string, method string, verdict bool) {
	if !verdict {
		s.m.authFailures.WithLabelValues(auth.ReasonBadIntegrity).Inc()
		s.log.Debug("authentication failed", "reason", auth.ReasonBadIntegrity, "method", method)
	}
}

// permit is pion's PermissionHandler: the same policy as inspect, as a second line.
func (s *Server) permit(_ net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		return false
	}
	allowed, _ := s.policy.Allowed(ip)
	return allowed
}

// quota is pion's QuotaHandler (RFC 8656 §7.2 step 7: 486 Allocation Quota Reached). A
// request that passes reserves its place until the allocation appears.
func (s *Server) quota(username, _ string, _ net.Addr) bool {
	userID := s.auth.UserID(username)
	total, user := s.allocs.counts(userID)
	rt, ru := s.quotas.counts(userID, s.now())
	switch {
	case s.cfg.MaxAllocations > 0 && total+rt >= s.cfg.MaxAllocations:
		s.m.quota.WithLabelValues("total").Inc()
		return false
	case s.cfg.MaxAllocationsPerUser > 0 && user+ru >= s.cfg.MaxAllocationsPerUser:
		s.m.quota.WithLabelValues("user").Inc()
		return false
	}
	s.quotas.reserve(userID, s.now())
	return true
}

// nextAllocID returns an allocation id: the start time in Unix milliseconds in the high bits
// and 20 random bits below, raised past the last id so that ids strictly grow within a
// process. Ids that grow with time append to the allocation log's B-tree (random ids cost
// a page write per row); the random bits keep a restart, even one after the clock stepped
// back, from reusing an id the log already holds. Positive int64 until the year 2109.
func (s *Server) nextAllocID() uint64 {
	for {
		prev := s.lastAllocID.Load()
		id := uint64(s.now().UnixMilli())<<20 | rand.Uint64N(1<<20)
		if id <= prev {
			id = prev + 1
		}
		if s.lastAllocID.CompareAndSwap(prev, id) {
			return id
		}
	}
}

func (s *Server) onAllocationCreated(src, dst net.Addr, _, username, realm string, relayAddr net.Addr, _ int) {
	client, ok1 := addrPortOf(src)
	server, ok2 := addrPortOf(dst)
	public, ok3 := addrPortOf(relayAddr)
	if !ok1 || !ok2 || !ok3 {
		s.log.Error("allocation with unknown address types")
		return
	}
	a := &alloc{
		id: s.nextAllocID(), client: client, server: server, username: username,
		userID: s.auth.UserID(username), realm: realm, created: s.now(), public: public,
	}
	key := tupleKey{server: server, client: client}
	if _, isUDP := dst.(*net.UDPAddr); isUDP {
		l := s.udpByIP[server]
		if l == nil {
			s.log.Error("allocation on an unknown UDP listener")
			return
		}
		a.transport, a.udpOut = UDP, l.socks[0]
	} else {
		key.stream = true
		sc := s.streams.get(key)
		if sc == nil {
			s.log.Error("allocation on an unknown stream connection")
			return
		}
		a.transport, a.stream = sc.l.transport, sc.Conn
		defer func() {
			sc.alloc.Store(a)
			sc.allocationChanged(true)
		}()
	}
	if _, isUDP := relayAddr.(*net.UDPAddr); isUDP {
		a.relay = s.relays.byPort(public.Addr(), public.Port())
	} else {
		a.relayTCP = s.relays.tcpByPublic(public)
	}
	if a.relay == nil && a.relayTCP == nil {
		s.log.Error("allocation without a relay socket")
		return
	}
	for d := range 2 {
		a.bytesC[d] = s.m.bytesC[a.transport][d]
		a.packetsC[d] = s.m.packetsC[a.transport][d]
	}
	s.allocs.add(key, a)
	s.quotas.consume(a.userID)
	if a.transport == UDP {
		s.udpByIP[server].allocs.put(client, a)
	}
	if a.relay != nil {
		a.relay.alloc.Store(a)
	} else {
		a.relayTCP.alloc.Store(a)
	}
	s.m.active.WithLabelValues(a.transport.String()).Inc()
	s.m.created.WithLabelValues(a.transport.String()).Inc()
	s.log.Debug("allocation created", "alloc", a.id, "transport", a.transport.String())
	s.events.AllocationStarted(AllocationStart{ID: a.id, Start: a.created, Transport: a.transport,
		Client: client, Server: server, Relayed: public, UserID: a.userID, Realm: realm})
}

func (s *Server) onAllocationDeleted(src, dst net.Addr, _, _, _ string) {
	client, _ := addrPortOf(src)
	server, _ := addrPortOf(dst)
	_, isUDP := dst.(*net.UDPAddr)
	key := tupleKey{stream: !isUDP, server: server, client: client}
	a := s.allocs.remove(key)
	if a == nil {
		return
	}
	if isUDP {
		if l := s.udpByIP[server]; l != nil {
			l.allocs.del(client, a)
		}
	} else if sc := s.streams.get(key); sc != nil && sc.alloc.CompareAndSwap(a, nil) {
		sc.allocationChanged(false)
	}
	reason := EndExpired
	if r := a.endReason.Load(); r != nil {
		reason = *r
	}
	now := s.now()
	s.m.active.WithLabelValues(a.transport.String()).Dec()
	s.m.duration.Observe(now.Sub(a.created).Seconds())
	s.log.Debug("allocation ended", "alloc", a.id, "transport", a.transport.String(), "reason", reason)
	s.events.AllocationEnded(AllocationEnd{ID: a.id, End: now, Reason: reason,
		BytesToPeer: a.bytes[toPeer].Load(), PacketsToPeer: a.packets[toPeer].Load(),
		BytesToClient: a.bytes[toClient].Load(), PacketsToClient: a.packets[toClient].Load()})
}

// allocByRelay finds the allocation of a relayed transport address from a pion event.
func (s *Server) allocByRelay(relayAddr net.Addr) *alloc {
	ap, ok := addrPortOf(relayAddr)
	if !ok {
		return nil
	}
	if _, isUDP := relayAddr.(*net.UDPAddr); isUDP {
		if rc := s.relays.byPort(ap.Addr(), ap.Port()); rc != nil {
			return rc.alloc.Load()
		}
		return nil
	}
	if tl := s.relays.tcpByPublic(ap); tl != nil {
		return tl.alloc.Load()
	}
	return nil
}

func (s *Server) onPermissionCreated(_, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
	a := s.allocByRelay(relayAddr)
	ip, ok := netip.AddrFromSlice(peer)
	if a == nil || !ok {
		return
	}
	ip = canon(ip)
	class, _ := s.policy.check(ip)
	if class == 0 {
		return // never relay to a denied peer, whatever pion thinks
	}
	added, first := a.addPermission(ip, class)
	if added {
		s.m.permissions.Inc()
	}
	if first {
		s.events.PermissionCreated(a.id, ip, s.now())
	}
}

func (s *Server) onPermissionDeleted(_, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
	a := s.allocByRelay(relayAddr)
	ip, ok := netip.AddrFromSlice(peer)
	if a == nil || !ok {
		return
	}
	if a.removePermission(canon(ip)) {
		s.m.permissions.Dec()
	}
}

func (s *Server) onChannelCreated(_, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, num uint16) {
	a := s.allocByRelay(relayAddr)
	ap, ok := addrPortOf(peer)
	if a == nil || !ok {
		return
	}
	if a.addChannel(num, ap) {
		s.m.channels.Inc()
	}
}

func (s *Server) onChannelDeleted(_, _ net.Addr, _, _, _ string, relayAddr, _ net.Addr, num uint16) {
	if a := s.allocByRelay(relayAddr); a != nil && a.removeChannel(num) {
		s.m.channels.Dec()
	}
}

// tupleKey identifies an allocation by its 5-tuple: stream distinguishes TCP/TLS from UDP
// (the listener address tells TCP from TLS).
type tupleKey struct {
	stream         bool
	server, client netip.AddrPort
}

// allocTable indexes live allocations for the control path.
type allocTable struct {
	mu      sync.Mutex
	byTuple map[tupleKey]*alloc
	perUser map[string]int
}

func (t *allocTable) add(k tupleKey, a *alloc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byTuple == nil {
		t.byTuple, t.perUser = map[tupleKey]*alloc{}, map[string]int{}
	}
	t.byTuple[k] = a
	t.perUser[a.userID]++
}

func (t *allocTable) remove(k tupleKey) *alloc {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.byTuple[k]
	if a != nil {
		delete(t.byTuple, k)
		if t.perUser[a.userID]--; t.perUser[a.userID] <= 0 {
			delete(t.perUser, a.userID)
		}
	}
	return a
}

func (t *allocTable) get(k tupleKey) *alloc {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byTuple[k]
}

func (t *allocTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byTuple)
}

func (t *allocTable) counts(userID string) (total, user int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byTuple), t.perUser[userID]
}

// each calls f for a snapshot of the live allocations, outside the lock.
func (t *allocTable) each(f func(*alloc)) {
	t.mu.Lock()
	as := make([]*alloc, 0, len(t.byTuple))
	for _, a := range t.byTuple {
		as = append(as, a)
	}
	t.mu.Unlock()
	for _, a := range as {
		f(a)
	}
}

// inGrace reports whether client holds an allocation made with username that is younger
// than maxAge: then an expired credential still works on it (the mid-call policy).
func (t *allocTable) inGrace(client netip.AddrPort, username string, now time.Time, maxAge time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, a := range t.byTuple {
		if k.client == client && a.username == username && now.Sub(a.created) < maxAge {
			return true
		}
	}
	return false
}

// keyCache remembers which secret's key verified a username, when several secrets are
// configured, so that pion's AuthHandler (which never sees the message) returns that key.
type keyCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

const maxCachedKeys = 16384

func (c *keyCache) get(username string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[username]
	return k, ok
}

func (c *keyCache) put(username string, key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		c.m = map[string][]byte{}
	}
	c.m[username] = key
}

// silentLogger drops pion's log output: its lines carry client and peer addresses and
// usernames, which must not reach Ferry's logs. Ferry logs and counts what matters itself.
type silentLogger struct{}

func (silentLogger) NewLogger(string) logging.LeveledLogger { return silentLog{} }

type silentLog struct{}

func (silentLog) Trace(string)          {}
func (silentLog) Tracef(string, ...any) {}
func (silentLog) Debug(string)          {}
func (silentLog) Debugf(string, ...any) {}
func (silentLog) Info(string)           {}
func (silentLog) Infof(string, ...any)  {}
func (silentLog) Warn(string)           {}
func (silentLog) Warnf(string, ...any)  {}
func (silentLog) Error(string)          {}
func (silentLog) Errorf(string, ...any) {}
