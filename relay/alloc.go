package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// alloc is Ferry's view of one pion allocation: its 5-tuple, its relay socket, and a mirror of
// its permissions and channel bindings that the data path reads without locks. pion stays the
// authority: the mirror changes only on pion's events.
type alloc struct {
	id        uint64
	transport Transport
	client    netip.AddrPort // client transport address (unmapped)
	server    netip.AddrPort // Ferry's listener address
	username  string
	userID    string
	realm     string
	created   time.Time

	relay    *relayConn        // UDP relayed transport address; nil for TCP allocations
	relayTCP *tcpRelayListener // RFC 6062 TCP allocation; nil for UDP
	public   netip.AddrPort    // relayed transport address as advertised

	udpSock *net.UDPConn // client output for UDP clients
	stream  net.Conn     // client output for TCP/TLS clients

	perms atomic.Pointer[map[netip.Addr]peerClass]
	chans atomic.Pointer[[]channel]
	mu    sync.Mutex              // serialises copy-on-write updates of perms and chans
	seen  map[netip.Addr]struct{} // peers that ever had a permission (guarded by mu)

	bytes, packets [2]atomic.Uint64 // [toPeer|toClient]
	bytesC         [2]prometheus.Counter
	packetsC       [2]prometheus.Counter

	endReason atomic.Pointer[string]
}

type channel struct {
	num  uint16
	peer netip.AddrPort
}

func (a *alloc) setEndReason(r string) { a.endReason.CompareAndSwap(nil, &r) }

// permission returns the class of a permitted peer IP, or 0 without a permission.
func (a *alloc) permission(ip netip.Addr) peerClass {
	if m := a.perms.Load(); m != nil {
		return (*m)[ip]
	}
	return 0
}

func (a *alloc) channelByNumber(num uint16) (netip.AddrPort, bool) {
	if cs := a.chans.Load(); cs != nil {
		for _, c := range *cs {
			if c.num == num {
				return c.peer, true
			}
		}
	}
	return netip.AddrPort{}, false
}

func (a *alloc) channelByPeer(peer netip.AddrPort) uint16 {
	if cs := a.chans.Load(); cs != nil {
		for _, c := range *cs {
			if c.peer == peer {
				return c.num
			}
		}
	}
	return 0
}

// addPermission mirrors a permission pion installed; it reports whether peer is new to this
// allocation (for the allocation log's first-permission time).
func (a *alloc) addPermission(ip netip.Addr, class peerClass) (added, first bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.perms.Load()
	if old != nil {
		if _, ok := (*old)[ip]; ok {
			return false, false
		}
	}
	next := make(map[netip.Addr]peerClass, 1+lenMap(old))
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[ip] = class
	a.perms.Store(&next)
	if a.seen == nil {
		a.seen = map[netip.Addr]struct{}{}
	}
	_, seen := a.seen[ip]
	a.seen[ip] = struct{}{}
	return true, !seen
}

func lenMap(m *map[netip.Addr]peerClass) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

func (a *alloc) removePermission(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.perms.Load()
	if old == nil {
		return false
	}
	if _, ok := (*old)[ip]; !ok {
		return false
	}
	next := make(map[netip.Addr]peerClass, len(*old))
	for k, v := range *old {
		if k != ip {
			next[k] = v
		}
	}
	a.perms.Store(&next)
	return true
}

func (a *alloc) addChannel(num uint16, peer netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next []channel
	if old := a.chans.Load(); old != nil {
		for _, c := range *old {
			if c.num == num {
				return false
			}
		}
		next = append(next, *old...)
	}
	next = append(next, channel{num, peer})
	a.chans.Store(&next)
	return true
}

func (a *alloc) removeChannel(num uint16) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.chans.Load()
	if old == nil {
		return false
	}
	next := make([]channel, 0, len(*old))
	removed := false
	for _, c := range *old {
		if c.num == num {
			removed = true
			continue
		}
		next = append(next, c)
	}
	a.chans.Store(&next)
	return removed
}

func (a *alloc) count(dir, n int) {
	a.bytes[dir].Add(uint64(n))
	a.packets[dir].Add(1)
	a.bytesC[dir].Add(float64(n))
	a.packetsC[dir].Inc()
}

// sendToClient writes one framed message (ChannelData or Data indication) to the client.
func (a *alloc) sendToClient(frame []byte) error {
	if a.stream != nil {
		_, err := a.stream.Write(frame)
		return err
	}
	_, err := a.udpSock.WriteToUDPAddrPort(frame, a.client)
	return err
}

// relayChannelData forwards the payload of a ChannelData message from the client to the peer
// bound to num (RFC 8656 §12.6). Unbound channels and peers without a permission are dropped.
func (s *Server) relayChannelData(a *alloc, num uint16, payload []byte) {
	peer, ok := a.channelByNumber(num)
	if !ok {
		s.m.drop(dropNoChannel)
		return
	}
	s.sendToPeer(a, payload, peer)
}

// relaySendIndication forwards the DATA of a Send indication (RFC 8656 §11.2). A Send
// indication never creates or refreshes a permission; without one it is dropped silently.
func (s *Server) relaySendIndication(a *alloc, msg []byte) {
	if !fingerprintOK(msg) {
		s.m.drop(dropBadFingerprint)
		return
	}
	pv := stunAttr(msg, attrXORPeerAddress)
	data := stunAttr(msg, attrData)
	if pv == nil || data == nil {
		s.m.drop(dropMalformed)
		return
	}
	peer, ok := decodeXORAddr(pv, msg)
	if !ok {
		s.m.drop(dropMalformed)
		return
	}
	s.sendToPeer(a, data, peer)
}

// sendToPeer writes payload from a's relayed transport address to peer, after the permission
// check and the port restrictions of its class.
func (s *Server) sendToPeer(a *alloc, payload []byte, peer netip.AddrPort) {
	if a.relay == nil {
		s.m.drop(dropUnexpected)
		return
	}
	dst := peer
	switch a.permission(peer.Addr()) {
	case 0:
		s.m.drop(dropNoPermission)
		return
	case peerRelayOnly:
		// Only active relayed transport addresses of this server (relay-to-relay), and
		// delivered to their bound socket directly rather than through a NAT hairpin.
		rc := s.relays.byPort(peer.Addr(), peer.Port())
		if rc == nil {
			s.m.drop(dropPeerPort)
			return
		}
		dst = rc.bind
	case peerLocal:
		if s.servicePorts.has(peer.Port()) {
			s.m.drop(dropPeerPort)
			return
		}
	}
	if _, err := a.relay.sock.WriteToUDPAddrPort(payload, dst); err != nil {
		s.m.drop(dropWriteError)
		return
	}
	a.count(toPeer, len(payload))
}

// fromPeer handles a datagram that arrived on a's relayed transport address: buf[headroom:
// headroom+n] is the payload. It goes to the client as ChannelData when a channel is bound to
// the peer, else as a Data indication (RFC 8656 §11.3, §12.7), and only with a permission.
func (s *Server) fromPeer(a *alloc, buf []byte, n int, src netip.AddrPort) {
	// A datagram from another relayed transport address of this server arrives from its bind
	// address; the permission was installed for the advertised one.
	if rc := s.relays.byBind(src); rc != nil {
		src = rc.public
	}
	if a.permission(src.Addr()) == 0 {
		s.m.drop(dropNoPermission)
		return
	}
	stream := a.stream != nil
	var frame []byte
	if num := a.channelByPeer(src); num != 0 {
		frame = encodeChannelData(buf, headroom-channelHdrLen, num, n, stream)
	} else {
		frame = encodeDataIndication(buf, headroom-dataIndicationHdrLen(src), n, src)
	}
	if err := a.sendToClient(frame); err != nil {
		s.m.drop(dropWriteError)
		return
	}
	a.count(toClient, n)
}

// portSet is a fixed set of ports (Ferry's own service ports), checked per packet.
type portSet [65536 / 64]uint64

func (p *portSet) add(port uint16)      { p[port/64] |= 1 << (port % 64) }
func (p *portSet) has(port uint16) bool { return p[port/64]&(1<<(port%64)) != 0 }

// be16 reads a big-endian uint16.
func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
