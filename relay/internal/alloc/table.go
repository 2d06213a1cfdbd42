// Package alloc is the relay's allocation table and data path: allocations keyed by 5-tuple
// with their permissions, channel bindings, relay sockets, owners and traffic counters
// (RFC 8656 §2-§12, RFC 6062), their lifetimes, and the forwarding of application data
// between clients and peers.
package alloc

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/bucket"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"github.com/ferryrelay/ferry/relay/internal/stats"
)

// Config configures a Table.
type Config struct {
	// Realm is recorded with each allocation in its start event.
	Realm string
	// RelayIPv4 and RelayIPv6 are the addresses relay sockets bind to; an invalid address
	// disables that family.
	RelayIPv4, RelayIPv6 netip.Addr
	// AdvertisedIPv4 and AdvertisedIPv6 replace the bind address in XOR-RELAYED-ADDRESS
	// behind 1:1 NAT (ports preserved); invalid means the bind address.
	AdvertisedIPv4, AdvertisedIPv6 netip.Addr
	// PortMin and PortMax bound relay ports, inclusive (required).
	PortMin, PortMax uint16
	// Policy judges peer addresses (required).
	Policy *policy.Policy
	// ServicePorts are Ferry's own ports, never reachable on host addresses.
	ServicePorts []uint16
	// MaxAllocationAge ends every allocation at this age (required).
	MaxAllocationAge time.Duration
	// RelaySocketBuffer is the receive and send buffer of each relay socket in bytes; 0
	// keeps the kernel default.
	RelaySocketBuffer int
	// NoGSO sends bursts with sendmmsg only, never as one UDP GSO send.
	NoGSO bool
	// Events receives allocation lifecycle events; nil discards them.
	Events EventSink
	// Stats counts (required).
	Stats *stats.Relay
	// Now is the clock of lifetimes and ages; nil means time.Now.
	Now func() time.Time
}

// Table holds every allocation. Lookups by 5-tuple and by relayed transport address are
// lock-free; creating and ending an allocation take short locks.
type Table struct {
	cfg          Config
	now          func() time.Time
	stats        *stats.Relay
	events       EventSink
	policy       atomic.Pointer[policy.Policy] // replaced whole by SetPolicy
	servicePorts portSet

	byKey   index
	fam     [2]family // [0] IPv4, [1] IPv6
	tcpMu   sync.Mutex
	tcpByIP map[netip.AddrPort]*Allocation // TCP allocations by relayed transport address
	conns   connTable                      // RFC 6062 peer connections awaiting ConnectionBind

	mu      sync.Mutex
	total   int
	perUser map[string]*userState // by quota key (quotaKey)

	caps atomic.Pointer[capLimits] // bandwidth caps; nil: none
	bw   [2]paddedBucket           // the server-wide caps, per direction
	mono func() int64              // monotonic nanoseconds for the caps

	readers sync.Pool  // *peerReader, lent to relay sockets while they have data
	watch   watchSlots // relay sockets event loops watch, by token
	wg      sync.WaitGroup
	lastID  atomic.Uint64
	closed  atomic.Bool
}

// family is the relay address family state: bind and advertised IPs, the port range, and
// the allocations by relay port (for relay-to-relay lookups on the data path).
type family struct {
	bind, public netip.Addr
	ports        *portRange // UDP relay ports
	tcpPorts     *portRange // TCP relay ports (RFC 6062): a port space of their own
	slots        []atomic.Pointer[Allocation]
}

// portsFor returns the port range of relayed transport addresses over UDP or TCP.
func (f *family) portsFor(tcp bool) *portRange {
	if tcp {
		return f.tcpPorts
	}
	return f.ports
}

// NewTable returns an empty table.
func NewTable(cfg Config) (*Table, error) {
	if cfg.PortMin == 0 || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("relay: bad relay port range %d-%d", cfg.PortMin, cfg.PortMax)
	}
	if cfg.Policy == nil || cfg.Stats == nil || cfg.MaxAllocationAge <= 0 {
		return nil, errors.New("relay: table needs a policy, stats and a maximum age")
	}
	t := &Table{cfg: cfg, now: cfg.Now, stats: cfg.Stats, events: cfg.Events,
		tcpByIP: map[netip.AddrPort]*Allocation{}, perUser: map[string]*userState{}}
	t.policy.Store(cfg.Policy)
	if t.now == nil {
		t.now = time.Now
	}
	start := time.Now()
	t.mono = func() int64 { return int64(time.Since(start)) }
	if t.events == nil {
		t.events = nopSink{}
	}
	for _, p := range cfg.ServicePorts {
		t.servicePorts.add(p)
	}
	for i, ips := range [2][2]netip.Addr{{cfg.RelayIPv4, cfg.AdvertisedIPv4}, {cfg.RelayIPv6, cfg.AdvertisedIPv6}} {
		if !ips[0].IsValid() {
			continue
		}
		f := &t.fam[i]
		f.bind, f.public = policy.Canon(ips[0]), policy.Canon(cmp.Or(ips[1], ips[0]))
		f.ports = newPortRange(cfg.PortMin, cfg.PortMax)
		f.tcpPorts = newPortRange(cfg.PortMin, cfg.PortMax)
		f.slots = make([]atomic.Pointer[Allocation], f.ports.size())
	}
	t.readers.New = func() any { return newPeerReader(t) }
	t.conns.init()
	return t, nil
}

// HasFamily reports whether relaying in IP family 4 or 6 is configured.
func (t *Table) HasFamily(v int) bool { return t.famOf(v).bind.IsValid() }

func (t *Table) famOf(v int) *family {
	if v == 6 {
		return &t.fam[1]
	}
	return &t.fam[0]
}

// Lookup returns the allocation of a 5-tuple, or nil.
func (t *Table) Lookup(k Key) *Allocation { return t.byKey.get(k) }

// Count returns the number of live allocations.
func (t *Table) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Errors of Create.
var (
	ErrExists     = errors.New("relay: the 5-tuple already has an allocation")  // 437
	ErrQuotaTotal = errors.New("relay: allocation quota reached")               // 486
	ErrQuotaUser  = errors.New("relay: the user's allocation quota is reached") // 486
	ErrNoPort     = errors.New("relay: no free relay port")                     // 508
	ErrFamily     = errors.New("relay: address family not configured")          // 440
	ErrToken      = errors.New("relay: unknown or expired reservation token")   // 508
	ErrClosed     = errors.New("relay: closed")
)

// Request asks for a new allocation.
type Request struct {
	Key         Key
	Username    string   // the USERNAME of the request
	UserID      string   // the user id parsed from it
	LongTermKey [16]byte // MD5(username:realm:password), RFC 8489 §9.2.2
	Client      Client
	Family      int  // 4 or 6
	TCP         bool // RFC 6062: a TCP relayed transport address
	EvenPort    bool // EVEN-PORT: an even relay port
	ReserveNext bool // EVEN-PORT with R: also reserve the next port and return a token
	Token       []byte
	Lifetime    time.Duration
	// MaxTotal and MaxPerUser cap allocations (0: no cap).
	MaxTotal, MaxPerUser int
}

// Create makes an allocation: it checks the quotas, opens the relayed transport address and
// starts relaying. With ReserveNext it returns the reservation token of the next port.
func (t *Table) Create(r Request) (*Allocation, [8]byte, error) {
	var tok [8]byte
	if t.closed.Load() {
		return nil, tok, ErrClosed
	}
	f := t.famOf(r.Family)
	if !f.bind.IsValid() {
		return nil, tok, ErrFamily
	}
	user, err := t.takeQuota(quotaKey(r.UserID, r.Username), r.MaxTotal, r.MaxPerUser)
	if err != nil {
		return nil, tok, err
	}
	now := t.now()
	a := &Allocation{ID: t.nextID(now), Key: r.Key, Username: r.Username, UserID: r.UserID,
		Created: now, key: r.LongTermKey, family: r.Family, client: r.Client, table: t,
		counters: t.stats.Traffic(r.Key.Transport), user: user}
	a.SetLifetime(now, r.Lifetime)
	port, err := t.openRelay(a, f, r, now)
	if err == nil && r.ReserveNext {
		tok = f.portsFor(r.TCP).reserve(port+1, now)
	}
	if err == nil && !t.byKey.put(r.Key, a) {
		t.closeRelay(a)
		err = ErrExists
	}
	if err != nil {
		t.giveQuota(user)
		return nil, tok, err
	}
	if a.relay != nil {
		f.slots[port-f.ports.min].Store(a)
		if err := t.watchRelay(a, r.Client.Poller); err != nil { // the loop is closing
			t.byKey.remove(r.Key, a)
			t.closeRelay(a)
			t.giveQuota(user)
			return nil, tok, ErrClosed
		}
	}
	tr := r.Key.Transport.String()
	t.stats.Active.WithLabelValues(tr).Inc()
	t.stats.Created.WithLabelValues(tr).Inc()
	t.events.AllocationStarted(AllocationStart{ID: a.ID, Start: now, Transport: r.Key.Transport,
		Client: r.Key.Client, Server: r.Key.Server, Relayed: a.Relayed, UserID: r.UserID, Realm: t.cfg.Realm})
	return a, tok, nil
}

// userState is what all allocations of one user id share: their number (the per-user
// quota) and the user's bandwidth buckets.
type userState struct {
	key string
	n   int // live allocations, under Table.mu
	bw  [2]bucket.Bucket
}

// quotaKey names the user an allocation counts against: its user id, or, for a credential
// without one (a bare "<expiry>" REST username, as coturn's clients send), the username
// itself, so that anonymous credentials do not share one quota.
func quotaKey(userID, username string) string {
	if userID != "" {
		return "u" + userID
	}
	return "n" + username
}

// takeQuota counts a new allocation of user key against the quotas (0: no cap) and returns
// the user's shared state.
func (t *Table) takeQuota(key string, maxTotal, maxUser int) (*userState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.perUser[key]
	switch {
	case maxTotal > 0 && t.total >= maxTotal:
		return nil, ErrQuotaTotal
	case maxUser > 0 && u != nil && u.n >= maxUser:
		return nil, ErrQuotaUser
	}
	if u == nil {
		u = &userState{key: key}
		t.perUser[key] = u
	}
	t.total++
	u.n++
	return u, nil
}

// giveQuota frees the quota slots of an ended allocation of u.
func (t *Table) giveQuota(u *userState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if u.n--; u.n <= 0 && t.perUser[u.key] == u {
		delete(t.perUser, u.key)
	}
}

// openRelay opens a's relayed transport address in family f and returns its port.
func (t *Table) openRelay(a *Allocation, f *family, r Request, now time.Time) (uint16, error) {
	bind := func(port uint16) bool {
		if r.TCP {
			return t.openTCPRelay(a, f, port) == nil
		}
		return t.openUDPRelay(a, f, port, r.Client.Poller != nil && RawSockets) == nil
	}
	ports := f.portsFor(r.TCP)
	if r.Token != nil {
		if len(r.Token) != 8 {
			return 0, ErrToken
		}
		port, ok := ports.takeReservation([8]byte(r.Token), now)
		if !ok {
			return 0, ErrToken
		}
		if !bind(port) {
			ports.release(port)
			return 0, ErrNoPort
		}
		return port, nil
	}
	port, ok := ports.acquire(r.EvenPort, r.ReserveNext, bind)
	if !ok {
		return 0, ErrNoPort
	}
	return port, nil
}

func (t *Table) openUDPRelay(a *Allocation, f *family, port uint16, raw bool) error {
	bind := netip.AddrPortFrom(f.bind, port)
	if raw {
		s, err := openRawUDP(bind, t.cfg.RelaySocketBuffer)
		if err != nil {
			return err
		}
		a.relay = &relaySocket{Socket: s, bind: bind, public: netip.AddrPortFrom(f.public, port)}
		a.Relayed = a.relay.public
		return nil
	}
	network := "udp4"
	if f.bind.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(bind))
	if err != nil {
		return err
	}
	if n := t.cfg.RelaySocketBuffer; n > 0 {
		_ = sockopt.SetSocketBuffersQuick(c, n) // best effort: the kernel default still relays
	}
	s, err := NewSocket(c)
	if err != nil {
		_ = c.Close()
		return err
	}
	a.relay = &relaySocket{Socket: s, bind: bind, public: netip.AddrPortFrom(f.public, port)}
	a.Relayed = a.relay.public
	return nil
}

// watchRelay starts reading a's relay socket: in the event loop of the client's listener
// socket when a's socket is a bare descriptor, else on a goroutine of its own.
func (t *Table) watchRelay(a *Allocation, p Poller) error {
	if a.relay.raw == nil {
		t.wg.Go(func() { t.readRelay(a) })
		return nil
	}
	tok, ok := t.watch.take(a)
	if !ok {
		return ErrNoPort
	}
	a.relay.token = tok
	var werr error
	err := a.relay.rc.Control(func(fd uintptr) { werr = p.Watch(int(fd), tok) })
	if err == nil {
		err = werr
	}
	return err
}

// closeRelay closes a's relayed transport address and frees its port.
func (t *Table) closeRelay(a *Allocation) {
	f := t.famOf(a.family)
	switch {
	case a.relay != nil:
		port := a.relay.bind.Port()
		f.slots[port-f.ports.min].CompareAndSwap(a, nil)
		if a.relay.raw == nil {
			_ = a.relay.Close()
			f.ports.release(port)
			return
		}
		// A bare descriptor closes when its event loop lets go of it: then the port and the
		// loop's slot are free again.
		a.relay.raw.onClose = func() {
			if a.relay.token != 0 {
				t.watch.give(a.relay.token)
			}
			f.ports.release(port)
		}
		_ = a.relay.Close()
	case a.tcp != nil:
		t.closeTCPRelay(a)
		f.tcpPorts.release(a.tcp.bind.Port())
	}
}

// nextID returns an allocation id: the start time in Unix milliseconds in the high bits and
// 20 random bits below, raised past the last id so that ids strictly grow within a process.
// Ids that grow with time append to the allocation log's B-tree (random ids cost a page
// write per row); the random bits keep a restart, even one after the clock stepped back,
// from reusing an id the log already holds. Positive int64 until the year 2109.
func (t *Table) nextID(now time.Time) uint64 {
	for {
		prev := t.lastID.Load()
		id := uint64(now.UnixMilli())<<20 | rand.Uint64N(1<<20)
		if id <= prev {
			id = prev + 1
		}
		if t.lastID.CompareAndSwap(prev, id) {
			return id
		}
	}
}

// End ends an allocation once: it stops relaying, frees the relayed transport address and
// reports the end with its traffic totals. reason is one of the End* constants.
func (t *Table) End(a *Allocation, reason string) {
	if !a.ended.CompareAndSwap(false, true) {
		return
	}
	t.byKey.remove(a.Key, a)
	t.closeRelay(a)
	t.giveQuota(a.user)
	if n := a.PermissionCount(); n > 0 {
		t.stats.Permissions.Sub(float64(n))
	}
	if n := a.ChannelCount(); n > 0 {
		t.stats.Channels.Sub(float64(n))
	}
	now := t.now()
	t.stats.Active.WithLabelValues(a.Key.Transport.String()).Dec()
	t.stats.Duration.Observe(now.Sub(a.Created).Seconds())
	bp, pp := a.Traffic(stats.ToPeer)
	bc, pc := a.Traffic(stats.ToClient)
	t.events.AllocationEnded(AllocationEnd{ID: a.ID, End: now, Reason: reason,
		BytesToPeer: bp, PacketsToPeer: pp, BytesToClient: bc, PacketsToClient: pc})
	if a.client.Ended != nil {
		a.client.Ended()
	}
}

// Sweep ends allocations whose lifetime ran out or that reached the maximum age, and
// removes expired permissions, channel bindings and port reservations, all by the table's
// clock. One goroutine calls it every second; tests call it after moving a fake clock.
func (t *Table) Sweep() {
	now := t.now()
	ns := now.UnixNano()
	t.byKey.each(func(a *Allocation) {
		switch {
		case now.Sub(a.Created) >= t.cfg.MaxAllocationAge:
			t.End(a, EndMaxAge)
		case ns >= a.expires.Load():
			t.End(a, EndExpired)
		case a.nextExpiry() <= ns:
			p, c := a.expire(ns)
			t.stats.Permissions.Sub(float64(p))
			t.stats.Channels.Sub(float64(c))
		}
	})
	for i := range t.fam {
		if t.fam[i].ports != nil {
			t.fam[i].ports.expireReservations(now)
			t.fam[i].tcpPorts.expireReservations(now)
		}
	}
	t.conns.expire(now)
}

// Close ends every allocation (reason "shutdown") and waits for the relay sockets' readers.
func (t *Table) Close() {
	t.closed.Store(true)
	t.byKey.each(func(a *Allocation) { t.End(a, EndShutdown) })
	t.conns.closeAll()
	t.wg.Wait()
}

// byRelayed returns the allocation whose relayed transport address (advertised or bound)
// is ap, or nil.
func (t *Table) byRelayed(ap netip.AddrPort) *Allocation {
	ip := ap.Addr()
	for i := range t.fam {
		f := &t.fam[i]
		if f.slots != nil && (ip == f.bind || ip == f.public) && ap.Port() >= f.ports.min && ap.Port() <= f.ports.max {
			return f.slots[ap.Port()-f.ports.min].Load()
		}
	}
	return nil
}

// byBind returns the allocation whose relay socket is bound to ap, or nil.
func (t *Table) byBind(ap netip.AddrPort) *Allocation {
	ip := ap.Addr()
	for i := range t.fam {
		f := &t.fam[i]
		if f.slots != nil && ip == f.bind && ap.Port() >= f.ports.min && ap.Port() <= f.ports.max {
			if a := f.slots[ap.Port()-f.ports.min].Load(); a != nil && a.relay != nil && a.relay.bind == ap {
				return a
			}
		}
	}
	return nil
}

// Policy returns the peer policy.
func (t *Table) Policy() *policy.Policy { return t.policy.Load() }

// SetPolicy replaces the peer policy (a configuration reload). It judges every permission,
// channel binding and connect asked for from then on; those already installed keep the
// class they were given until they expire or are refreshed.
func (t *Table) SetPolicy(p *policy.Policy) { t.policy.Store(p) }

// RelayPorts returns how many relay ports are taken (by allocations or reservations) in
// the fullest of the port ranges (one per address family, UDP and TCP apart), and its size.
func (t *Table) RelayPorts() (inUse, total int) {
	for i := range t.fam {
		f := &t.fam[i]
		if f.ports == nil {
			continue
		}
		for _, r := range []*portRange{f.ports, f.tcpPorts} {
			if n, size := r.inUse(), r.size(); total == 0 || n*total > inUse*size {
				inUse, total = n, size
			}
		}
	}
	return inUse, total
}

// CheckPeer applies the peer policy to a transport address for a channel binding (or, with
// tcp, an RFC 6062 Connect): the IP must be allowed, one of Ferry's relay IPs only at an
// active relayed transport address, a host address never at one of Ferry's service ports.
// It returns the class, or 0 and the denial reason.
func (t *Table) CheckPeer(peer netip.AddrPort, tcp bool) (policy.Class, string) {
	class, reason := t.policy.Load().Check(peer.Addr())
	switch class {
	case 0:
		return 0, reason
	case policy.RelayOnly:
		other := t.byRelayed(peer)
		if tcp {
			other = t.tcpByRelayed(peer)
		}
		if other == nil {
			return 0, policy.DenyNotRelayedAddr
		}
	case policy.Local:
		if t.servicePorts.has(peer.Port()) {
			return 0, policy.DenyServicePort
		}
	}
	if peer.Port() == 0 {
		return 0, policy.DenyInvalid
	}
	return class, ""
}

// Permit installs or refreshes permissions for peers (already allowed by the policy, with
// their classes) for lifetime, all or nothing within max per allocation; false means over the
// cap (RFC 8656 §9.2: 508).
func (t *Table) Permit(a *Allocation, peers []netip.Addr, classes []policy.Class, lifetime time.Duration, max int) bool {
	now := t.now()
	added, first, ok := a.installPermissions(peers, classes, now.Add(lifetime).UnixNano(), max)
	if !ok {
		return false
	}
	t.stats.Permissions.Add(float64(added))
	for _, ip := range first {
		t.events.PermissionCreated(a.ID, ip, now)
	}
	return true
}

// BindChannel binds channel num of a to peer for chanLifetime (or refreshes the binding)
// and installs or refreshes the peer IP's permission for permLifetime (RFC 8656 §12.2),
// within maxChans channel bindings and maxPerms permissions per allocation.
func (t *Table) BindChannel(a *Allocation, num uint16, peer netip.AddrPort, class policy.Class, chanLifetime, permLifetime time.Duration, maxChans, maxPerms int) ChannelResult {
	now := t.now()
	res, newChan, newPerm, first := a.bindChannel(num, peer, class, now.Add(chanLifetime).UnixNano(), now.Add(permLifetime).UnixNano(), maxChans, maxPerms)
	if newChan {
		t.stats.Channels.Inc()
	}
	if newPerm {
		t.stats.Permissions.Inc()
	}
	if first {
		t.events.PermissionCreated(a.ID, peer.Addr(), now)
	}
	return res
}

// portSet is a fixed set of ports (Ferry's own service ports), checked per packet.
type portSet [65536 / 64]uint64

func (p *portSet) add(port uint16)      { p[port/64] |= 1 << (port % 64) }
func (p *portSet) has(port uint16) bool { return p[port/64]&(1<<(port%64)) != 0 }
