package control

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

// peerAddr decodes an XOR-PEER-ADDRESS value of the request, unmapped (C02).
func (r *request) peerAddr(v []byte) (netip.AddrPort, bool) {
	return wire.DecodeXORAddr(v, r.m.Raw)
}

// familyMatches reports whether peer has the address family of a's relayed transport
// address (RFC 8656 §9.2, §12.2: 443 otherwise).
func familyMatches(a *alloc.Allocation, peer netip.AddrPort) bool {
	return peer.Addr().Is4() == (a.Family() == 4)
}

// createPermission answers a CreatePermission request (RFC 8656 §9.2): every XOR-PEER-ADDRESS
// is judged by the peer policy (403), then its family (443), and the request is granted or
// refused as a whole; nothing is installed when any peer is refused, or when the permissions
// would exceed the cap (508).
func (h *Handler) createPermission(r *request) {
	a := r.alloc
	var ips []netip.Addr
	var classes []policy.Class
	var denials []string
	for _, at := range r.m.Attributes {
		if at.Type != stun.AttrXORPeerAddress {
			continue
		}
		peer, ok := r.peerAddr(at.Value)
		if !ok {
			r.fail(stun.CodeBadRequest)
			return
		}
		class, reason := h.table.Policy().Check(peer.Addr())
		if reason != "" {
			denials = append(denials, reason)
			continue
		}
		ips, classes = append(ips, peer.Addr()), append(classes, class)
	}
	switch {
	case len(ips)+len(denials) == 0:
		r.fail(stun.CodeBadRequest) // RFC 8656 §9.2: at least one XOR-PEER-ADDRESS
		return
	case len(denials) > 0:
		r.deny(denials...)
		return
	}
	for _, ip := range ips {
		if ip.Is4() != (a.Family() == 4) {
			r.fail(stun.CodePeerAddrFamilyMismatch)
			return
		}
	}
	if !h.table.Permit(a, ips, classes, h.cfg.PermissionLifetime, h.limits.Load().MaxPermissions) {
		r.overQuota(stats.QuotaPermissions)
		return
	}
	r.succeed(a)
}

// channelBind answers a ChannelBind request (RFC 8656 §12.2): the channel number must lie in
// 0x4000-0x4FFF (up to 0x7FFF with LegacyChannelNumbers), the first XOR-PEER-ADDRESS must
// pass the peer policy (403) and match the family (443), and neither the number nor the
// peer may be bound otherwise (400). It binds the channel and installs the permission.
func (h *Handler) channelBind(r *request) {
	a := r.alloc
	v, err := r.m.Get(stun.AttrChannelNumber)
	if err != nil || len(v) != 4 {
		r.fail(stun.CodeBadRequest)
		return
	}
	num := binary.BigEndian.Uint16(v)
	hi := uint16(wire.MaxChannel)
	if h.cfg.LegacyChannelNumbers {
		hi = wire.MaxFramingChannel
	}
	if num < wire.MinChannel || num > hi {
		r.fail(stun.CodeBadRequest) // RFC 8656 §12
		return
	}
	pv, err := r.m.Get(stun.AttrXORPeerAddress) // the first one (C30)
	if err != nil {
		r.fail(stun.CodeBadRequest)
		return
	}
	peer, ok := r.peerAddr(pv)
	if !ok {
		r.fail(stun.CodeBadRequest)
		return
	}
	class, reason := h.table.CheckPeer(peer, false)
	switch {
	case reason != "":
		r.deny(reason)
		return
	case !familyMatches(a, peer):
		r.fail(stun.CodePeerAddrFamilyMismatch)
		return
	}
	lim := h.limits.Load()
	switch h.table.BindChannel(a, num, peer, class, h.cfg.ChannelLifetime, h.cfg.PermissionLifetime, lim.MaxChannels, lim.MaxPermissions) {
	case alloc.ChannelConflict:
		r.fail(stun.CodeBadRequest)
	case alloc.ChannelNoCapacity:
		r.overQuota(stats.QuotaChannels)
	case alloc.ChannelNoPermission:
		r.overQuota(stats.QuotaPermissions)
	default:
		r.succeed(a)
	}
}

// overQuota answers 508 for a request over a per-allocation quota of kind (RFC 8656 §9.2,
// §12.2) and counts it.
func (r *request) overQuota(kind string) {
	r.h.stats.Quota.WithLabelValues(kind).Inc()
	r.fail(stun.CodeInsufficientCapacity)
}

// connect answers an RFC 6062 Connect request (§5.2): a TCP connection from the allocation's
// relayed transport address to a permitted peer; the answer carries its CONNECTION-ID.
func (h *Handler) connect(r *request) {
	a := r.alloc
	pv, err := r.m.Get(stun.AttrXORPeerAddress)
	if err != nil || !a.TCP() {
		r.fail(stun.CodeBadRequest)
		return
	}
	peer, ok := r.peerAddr(pv)
	if !ok {
		r.fail(stun.CodeBadRequest)
		return
	}
	if _, reason := h.table.CheckPeer(peer, true); reason != "" {
		r.deny(reason)
		return
	}
	if !familyMatches(a, peer) {
		r.fail(stun.CodePeerAddrFamilyMismatch)
		return
	}
	if !a.HasPermission(peer.Addr()) {
		// RFC 6062 §5.2 asks for a permission first; Ferry installs it, as coturn does, so
		// that a Connect alone reaches the peer.
		class, _ := h.table.Policy().Check(peer.Addr())
		if !h.table.Permit(a, []netip.Addr{peer.Addr()}, []policy.Class{class}, h.cfg.PermissionLifetime, h.limits.Load().MaxPermissions) {
			r.overQuota(stats.QuotaPermissions)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), alloc.ConnectTimeout)
	id, err := h.table.Connect(ctx, a, peer)
	cancel()
	switch {
	case errors.Is(err, alloc.ErrConnExists):
		r.fail(stun.CodeConnAlreadyExists)
	case err != nil:
		r.fail(stun.CodeConnTimeoutOrFailure)
	default:
		r.succeed(a, connectionIDAttr(id))
	}
}

// connectionBind answers an RFC 6062 ConnectionBind (§5.4) on a new client connection: the
// named peer connection, made by Connect or announced by ConnectionAttempt, is handed to
// the caller, whose connection carries its bytes from then on.
func (h *Handler) connectionBind(r *request) *alloc.PeerConn {
	if r.alloc != nil || r.src.Key.Transport == wire.UDP {
		r.fail(stun.CodeBadRequest) // a data connection carries no allocation of its own
		return nil
	}
	id, ok := connectionID(r.m)
	if !ok {
		r.fail(stun.CodeBadRequest)
		return nil
	}
	owner := h.table.ConnectionOwner(id)
	if owner == nil {
		r.fail(stun.CodeBadRequest)
		return nil
	}
	if owner.Username != r.user {
		r.fail(stun.CodeWrongCredentials)
		return nil
	}
	pc, err := h.table.TakeConnection(id)
	if err != nil {
		r.fail(stun.CodeBadRequest)
		return nil
	}
	r.succeed(nil)
	return pc
}

// connectionID reads CONNECTION-ID (RFC 6062 §6.2.1).
func connectionID(m *stun.Message) (uint32, bool) {
	v, err := m.Get(stun.AttrConnectionID)
	if err != nil || len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

func connectionIDAttr(id uint32) stun.RawAttribute {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, id)
	return stun.RawAttribute{Type: stun.AttrConnectionID, Value: v}
}
