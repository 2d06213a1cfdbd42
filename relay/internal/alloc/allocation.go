package alloc

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/bucket"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// Key is an allocation's 5-tuple (RFC 8656 §2): the client's transport address, the server
// transport address it reached, and the transport (TLS told apart from TCP). Addresses are
// unmapped, without zone.
type Key struct {
	Transport      wire.Transport
	Client, Server netip.AddrPort
}

// Allocation is one TURN allocation: its 5-tuple, the credential it was made with, its
// relayed transport address, its permissions and channel bindings, and its traffic. The data
// path reads permissions and channels without locks (copy-on-write slices); requests change
// them under mu.
type Allocation struct {
	ID       uint64
	Key      Key
	Username string // the USERNAME it was created with: every later request must match (RFC 8656 §5)
	UserID   string // the user id part of a REST username, parsed once at creation
	Created  time.Time
	Relayed  netip.AddrPort // relayed transport address as advertised (XOR-RELAYED-ADDRESS)
	key      [16]byte       // the long-term key (RFC 8489 §9.2.2), cached for later requests
	family   int            // 4 or 6: the relayed address's family

	relay  *relaySocket // UDP relayed transport address; nil for TCP allocations
	tcp    *tcpRelay    // RFC 6062 TCP allocation; nil for UDP ones
	client Client       // the way back to the client
	table  *Table

	expires atomic.Int64 // end of the lifetime, Unix nanoseconds of the table's clock
	perms   atomic.Pointer[[]permission]
	chans   atomic.Pointer[[]binding]
	ended   atomic.Bool

	mu       sync.Mutex
	seen     []netip.Addr // peers that ever had a permission (the log wants the first time only)
	lastTxID [12]byte     // transaction id of the last answered request
	lastResp []byte       // and its answer, sent again for a retransmission (RFC 8656 §7.2, C26)

	traffic  [2]struct{ bytes, packets atomic.Uint64 } // [stats.ToPeer|stats.ToClient]
	counters *[2]stats.Traffic
	bw       [2]bucket.Bucket // bandwidth caps per direction (caps.go)
	user     *userState       // the quota and bandwidth state of its user id
}

// permission allows traffic with one peer IP address until expires (RFC 8656 §9).
type permission struct {
	ip      netip.Addr
	class   policy.Class
	expires int64
}

// binding binds a channel number to a peer transport address until expires (RFC 8656 §12).
type binding struct {
	num     uint16
	peer    netip.AddrPort
	expires int64
}

// LongTermKey returns the key the allocation was authenticated with.
func (a *Allocation) LongTermKey() []byte { return a.key[:] }

// Family returns 4 or 6, the address family of the relayed transport address.
func (a *Allocation) Family() int { return a.family }

// TCP reports whether this is an RFC 6062 TCP allocation.
func (a *Allocation) TCP() bool { return a.tcp != nil }

// Ended reports whether the allocation has ended.
func (a *Allocation) Ended() bool { return a.ended.Load() }

// Expires returns the end of its lifetime by the table's clock.
func (a *Allocation) Expires() time.Time { return time.Unix(0, a.expires.Load()) }

// SetLifetime makes the allocation live for d from now (RFC 8656 §7.3 Refresh).
func (a *Allocation) SetLifetime(now time.Time, d time.Duration) {
	a.expires.Store(now.Add(d).UnixNano())
}

// Retransmission returns the answer already sent for transaction txid, or nil: a request
// whose answer was lost gets the same answer again (RFC 8656 §7.2, RFC 8489 §6.3.1).
func (a *Allocation) Retransmission(txid [12]byte) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lastResp != nil && a.lastTxID == txid {
		return a.lastResp
	}
	return nil
}

// Answered remembers the answer to transaction txid (copied).
func (a *Allocation) Answered(txid [12]byte, resp []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastTxID = txid
	a.lastResp = append(a.lastResp[:0], resp...)
}

// permission returns the class of a permitted peer IP, or 0 without a permission.
func (a *Allocation) permission(ip netip.Addr) policy.Class {
	if ps := a.perms.Load(); ps != nil {
		for i := range *ps {
			if (*ps)[i].ip == ip {
				return (*ps)[i].class
			}
		}
	}
	return 0
}

// HasPermission reports whether ip (unmapped) has a permission.
func (a *Allocation) HasPermission(ip netip.Addr) bool { return a.permission(ip) != 0 }

// PermissionCount returns the number of installed permissions.
func (a *Allocation) PermissionCount() int {
	if ps := a.perms.Load(); ps != nil {
		return len(*ps)
	}
	return 0
}

// ChannelCount returns the number of channel bindings.
func (a *Allocation) ChannelCount() int {
	if cs := a.chans.Load(); cs != nil {
		return len(*cs)
	}
	return 0
}

// channelPeer returns the peer bound to channel num.
func (a *Allocation) channelPeer(num uint16) (netip.AddrPort, bool) {
	if cs := a.chans.Load(); cs != nil {
		for i := range *cs {
			if (*cs)[i].num == num {
				return (*cs)[i].peer, true
			}
		}
	}
	return netip.AddrPort{}, false
}

// channelOf returns the channel bound to peer, or 0.
func (a *Allocation) channelOf(peer netip.AddrPort) uint16 {
	if cs := a.chans.Load(); cs != nil {
		for i := range *cs {
			if (*cs)[i].peer == peer {
				return (*cs)[i].num
			}
		}
	}
	return 0
}

// account records one batch relayed in direction dir (stats.ToPeer or stats.ToClient),
// given the payload length of each packet: the allocation's totals (for the allocation log)
// and the per-transport counters. Every batch the data path relays passes here, once; it is
// where the bandwidth caps apply (caps.go). It returns how many of the packets may go, from
// the front; the rest are dropped and counted. With no cap set it costs one pointer load
// more than counting.
func (a *Allocation) account(dir int, lens []int) int {
	if c := a.table.caps.Load(); c != nil {
		if lens = lens[:a.table.admit(c, a, dir, lens, true)]; len(lens) == 0 {
			return 0
		}
	}
	a.count(dir, lens)
	return len(lens)
}

// count adds a batch relayed in direction dir to the allocation's totals and the counters.
func (a *Allocation) count(dir int, lens []int) {
	bytes := 0
	for _, n := range lens {
		bytes += n
	}
	t := &a.traffic[dir]
	t.bytes.Add(uint64(bytes))
	t.packets.Add(uint64(len(lens)))
	c := &a.counters[dir]
	c.Bytes.Add(float64(bytes))
	c.Packets.Add(float64(len(lens)))
}

// Traffic returns the payload bytes and packets relayed so far in direction dir.
func (a *Allocation) Traffic(dir int) (bytes, packets uint64) {
	return a.traffic[dir].bytes.Load(), a.traffic[dir].packets.Load()
}

// installPermissions installs or refreshes permissions for ips (unmapped, already allowed by
// the policy, with their classes) until expires, all or nothing: when that would exceed max
// permissions it installs none and returns false (RFC 8656 §9.2: 508). first lists the IPs
// that never had a permission on this allocation before.
func (a *Allocation) installPermissions(ips []netip.Addr, classes []policy.Class, expires int64, max int) (added int, first []netip.Addr, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var old []permission
	if p := a.perms.Load(); p != nil {
		old = *p
	}
	next := make([]permission, len(old), len(old)+len(ips))
	copy(next, old)
outer:
	for i, ip := range ips {
		for j := range next {
			if next[j].ip == ip {
				next[j].expires = expires
				continue outer
			}
		}
		next = append(next, permission{ip: ip, class: classes[i], expires: expires})
		added++
	}
	if len(next) > max {
		return 0, nil, false
	}
	a.perms.Store(&next)
	for _, p := range next[len(old):] {
		if !containsAddr(a.seen, p.ip) {
			a.seen = append(a.seen, p.ip)
			first = append(first, p.ip)
		}
	}
	return added, first, true
}

func containsAddr(s []netip.Addr, ip netip.Addr) bool {
	for _, x := range s {
		if x == ip {
			return true
		}
	}
	return false
}

// ChannelResult is the outcome of a channel binding request.
type ChannelResult int

// Channel binding outcomes.
const (
	ChannelBound        ChannelResult = iota // bound or refreshed
	ChannelConflict                          // the number or the peer is bound otherwise: 400 (RFC 8656 §12.2)
	ChannelNoCapacity                        // over the cap of channel bindings: 508
	ChannelNoPermission                      // a new peer IP over the cap of permissions: 508
)

// bindChannel binds num to peer (or refreshes the binding) until chanExpires, and installs
// or refreshes the permission for the peer's IP until permExpires (RFC 8656 §12.2), within
// maxChans channel bindings and maxPerms permissions.
func (a *Allocation) bindChannel(num uint16, peer netip.AddrPort, class policy.Class, chanExpires, permExpires int64, maxChans, maxPerms int) (res ChannelResult, newChan, newPerm, first bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var cs []binding
	if p := a.chans.Load(); p != nil {
		cs = *p
	}
	found := -1
	for i, c := range cs {
		switch {
		case c.num == num && c.peer == peer:
			found = i
		case c.num == num || c.peer == peer:
			return ChannelConflict, false, false, false
		}
	}
	var ps []permission
	if p := a.perms.Load(); p != nil {
		ps = *p
	}
	perm := -1
	for i := range ps {
		if ps[i].ip == peer.Addr() {
			perm = i
		}
	}
	switch {
	case found < 0 && len(cs) >= maxChans:
		return ChannelNoCapacity, false, false, false
	case perm < 0 && len(ps) >= maxPerms:
		return ChannelNoPermission, false, false, false
	}
	nextC := append(make([]binding, 0, len(cs)+1), cs...)
	if found >= 0 {
		nextC[found].expires = chanExpires
	} else {
		nextC = append(nextC, binding{num: num, peer: peer, expires: chanExpires})
	}
	nextP := append(make([]permission, 0, len(ps)+1), ps...)
	if perm >= 0 {
		nextP[perm].expires = permExpires
	} else {
		nextP = append(nextP, permission{ip: peer.Addr(), class: class, expires: permExpires})
	}
	a.chans.Store(&nextC)
	a.perms.Store(&nextP)
	if perm < 0 && !containsAddr(a.seen, peer.Addr()) {
		a.seen = append(a.seen, peer.Addr())
		first = true
	}
	return ChannelBound, found < 0, perm < 0, first
}

// expire removes permissions and channel bindings whose time is up and returns how many of
// each it removed.
func (a *Allocation) expire(now int64) (perms, chans int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.perms.Load(); p != nil {
		keep := make([]permission, 0, len(*p))
		for _, x := range *p {
			if x.expires > now {
				keep = append(keep, x)
			}
		}
		if perms = len(*p) - len(keep); perms > 0 {
			a.perms.Store(&keep)
		}
	}
	if c := a.chans.Load(); c != nil {
		keep := make([]binding, 0, len(*c))
		for _, x := range *c {
			if x.expires > now {
				keep = append(keep, x)
			}
		}
		if chans = len(*c) - len(keep); chans > 0 {
			a.chans.Store(&keep)
		}
	}
	return perms, chans
}

// nextExpiry returns the earliest time something of the allocation expires.
func (a *Allocation) nextExpiry() int64 {
	next := a.expires.Load()
	if p := a.perms.Load(); p != nil {
		for _, x := range *p {
			next = min(next, x.expires)
		}
	}
	if c := a.chans.Load(); c != nil {
		for _, x := range *c {
			next = min(next, x.expires)
		}
	}
	return next
}
