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

	udpOut *udpSocket // client output for UDP clients: the listener's socket
	stream net.Conn   // client output for TCP/TLS clients

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

func (a *alloc) permissionCount() int { return lenMap(a.perms.Load()) }

func (a *alloc) channelCount() int {
	if cs := a.chans.Load(); cs != nil {
		return len(*cs)
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

func (a *alloc) count(dir, n int) { a.countN(dir, 1, n) }

// countN counts packets relayed in one direction with their total payload bytes.
func (a *alloc) countN(dir, packets, bytes int) {
	a.bytes[dir].Add(uint64(bytes))
	a.packets[dir].Add(uint64(packets))
	a.bytesC[dir].Add(float64(bytes))
	a.packetsC[dir].Add(float64(packets))
}

// relayChannelData queues the payload of a ChannelData message from the client for the peer
// bound to num (RFC 8656 §12.6). Unbound channels and peers without a permission are dropped.
func (s *Server) relayChannelData(a *alloc, num uint16, payload []byte, ob *outbox) {
	peer, ok := a.channelByNumber(num)
	if !ok {
		s.m.drop(dropNoChannel)
		return
	}
	if dst, ok := s.peerDest(a, peer); ok {
		ob.add(s, a, dst, payload)
	}
}

// relaySendIndication queues the DATA of a Send indication (RFC 8656 §11.2). A Send
// indication never creates or refreshes a permission; without one it is dropped silently.
func (s *Server) relaySendIndication(a *alloc, msg []byte, ob *outbox) {
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
	if dst, ok := s.peerDest(a, peer); ok {
		ob.add(s, a, dst, data)
	}
}

// peerDest checks that a may send to peer (a permission, and the port restrictions of its
// class) and returns where the datagram really goes: another relayed transport address of
// this server is reached at its bound socket rather than through a NAT hairpin.
func (s *Server) peerDest(a *alloc, peer netip.AddrPort) (netip.AddrPort, bool) {
	if a.relay == nil {
		s.m.drop(dropUnexpected)
		return netip.AddrPort{}, false
	}
	switch a.permission(peer.Addr()) {
	case 0:
		s.m.drop(dropNoPermission)
		return netip.AddrPort{}, false
	case peerRelayOnly:
		rc := s.relays.byPort(peer.Addr(), peer.Port())
		if rc == nil {
			s.m.drop(dropPeerPort)
			return netip.AddrPort{}, false
		}
		return rc.bind, true
	case peerLocal:
		if s.servicePorts.has(peer.Port()) {
			s.m.drop(dropPeerPort)
			return netip.AddrPort{}, false
		}
	}
	return peer, true
}

// sendToPeer writes one payload from a's relayed transport address to peer, with the same
// checks (pion's path, should it relay itself).
func (s *Server) sendToPeer(a *alloc, payload []byte, peer netip.AddrPort) {
	dst, ok := s.peerDest(a, peer)
	if !ok {
		return
	}
	if _, err := a.relay.sock.WriteToUDPAddrPort(payload, dst); err != nil {
		s.m.drop(dropWriteError)
		return
	}
	a.count(toPeer, len(payload))
}

// deliverFromPeers frames the n datagrams pr read from a's relayed transport address and
// sends them to the client: ChannelData when a channel is bound to the peer, else a Data
// indication (RFC 8656 §11.3, §12.7), and only with a permission. A UDP client gets them in
// one sendmmsg (or GSO send), a TCP/TLS client in one write.
func (s *Server) deliverFromPeers(a *alloc, pr *peerReader, n int) {
	stream := a.stream != nil
	k, bytes := 0, 0
	pr.seq = pr.seq[:0]
	for i := 0; i < n; i++ {
		if pr.in.Trunc[i] {
			s.m.drop(dropTooLarge) // never relay a partial datagram
			continue
		}
		src := pr.in.Addrs[i]
		// A datagram from another relayed transport address of this server arrives from its
		// bind address; the permission was installed for the advertised one.
		if rc := s.relays.byBind(src); rc != nil {
			src = rc.public
		}
		if a.permission(src.Addr()) == 0 {
			s.m.drop(dropNoPermission)
			continue
		}
		size := pr.in.Lens[i]
		var frame []byte
		if num := a.channelByPeer(src); num != 0 {
			frame = encodeChannelData(pr.bufs[i], headroom-channelHdrLen, num, size, stream)
		} else {
			frame = encodeDataIndication(pr.bufs[i], headroom-dataIndicationHdrLen(src), size, src)
		}
		if stream {
			pr.seq = append(pr.seq, frame...)
		} else {
			pr.out.Bufs[k], pr.out.Lens[k], pr.out.Addrs[k] = frame, len(frame), a.client
		}
		k++
		bytes += size
	}
	if k == 0 {
		return
	}
	if stream {
		if _, err := a.stream.Write(pr.seq); err != nil {
			s.m.droppedByName[dropWriteError].Add(float64(k))
			return
		}
		a.countN(toClient, k, bytes)
		return
	}
	sent, _ := sendBatch(pr.w, a.udpOut.rc, a.udpOut.v6, pr.out, k, pr.gso)
	if sent < k {
		s.m.droppedByName[dropWriteError].Add(float64(k - sent))
	}
	if sent > 0 {
		a.countN(toClient, sent, bytes)
	}
}

// portSet is a fixed set of ports (Ferry's own service ports), checked per packet.
type portSet [65536 / 64]uint64

func (p *portSet) add(port uint16)      { p[port/64] |= 1 << (port % 64) }
func (p *portSet) has(port uint16) bool { return p[port/64]&(1<<(port%64)) != 0 }

// be16 reads a big-endian uint16.
func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
