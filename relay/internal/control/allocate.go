package control

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

// ADDITIONAL-ADDRESS-FAMILY and ADDRESS-ERROR-CODE (RFC 8656 §18.11, §18.12).
const (
	attrAdditionalAddressFamily stun.AttrType = 0x8000
	attrAddressErrorCode        stun.AttrType = 0x8001
)

// noDualAllocation is the ADDRESS-ERROR-CODE answering ADDITIONAL-ADDRESS-FAMILY: the IPv6
// part of a dual allocation, which Ferry does not offer, fails with 440 while the IPv4 part
// is granted (RFC 8656 §7.2). Family (IPv6), 13 reserved bits, class 4, number 40, reason.
var noDualAllocation = stun.RawAttribute{Type: attrAddressErrorCode,
	Value: append([]byte{0x02, 0x00, 0x04, 40}, "Address Family not Supported"...)}

// IP protocol numbers of REQUESTED-TRANSPORT (RFC 8656 §18.7, RFC 6062 §6.2.2).
const (
	protoTCP = 6
	protoUDP = 17
)

// allocate answers an Allocate request (RFC 8656 §7.2; RFC 6062 §5.1 for TCP).
func (h *Handler) allocate(r *request) {
	if r.alloc != nil {
		r.fail(stun.CodeAllocMismatch) // the 5-tuple is in use (and this is no retransmission)
		return
	}
	if h.draining.Load() {
		r.fail(DrainCode) // drain.go
		return
	}
	req, code := h.allocationRequest(r)
	if code != 0 {
		r.fail(code)
		return
	}
	a, token, err := h.table.Create(req)
	if err != nil {
		r.fail(h.createError(err))
		return
	}
	attrs := []stun.Setter{
		alloc.XORAddr(stun.AttrXORRelayedAddress, a.Relayed),
		lifetimeAttr(req.Lifetime),
	}
	if req.ReserveNext {
		attrs = append(attrs, stun.RawAttribute{Type: stun.AttrReservationToken, Value: token[:]})
	}
	if r.m.Contains(attrAdditionalAddressFamily) {
		attrs = append(attrs, noDualAllocation)
	}
	attrs = append(attrs, alloc.XORAddr(stun.AttrXORMappedAddress, r.src.Key.Client))
	r.alloc = a // the answer is remembered for a retransmission
	r.succeed(a, attrs...)
}

// allocationRequest reads an Allocate's attributes into a table request, or returns the
// error code for a bad one.
func (h *Handler) allocationRequest(r *request) (alloc.Request, stun.ErrorCode) {
	m := r.m
	lim := h.limits.Load()
	req := alloc.Request{Key: r.src.Key, Username: r.user, UserID: r.userID, Client: r.src.Client,
		Lifetime: h.lifetime(m), MaxTotal: lim.MaxAllocations, MaxPerUser: lim.MaxAllocationsPerUser}
	copy(req.LongTermKey[:], r.key)
	v, err := m.Get(stun.AttrRequestedTransport)
	switch {
	case err != nil || len(v) != 4:
		return req, stun.CodeBadRequest // RFC 8656 §7.2 step 3
	case v[0] == protoTCP && !h.cfg.TCPAllocations:
		return req, stun.CodeUnsupportedTransProto
	case v[0] == protoTCP && r.src.Key.Transport == wire.UDP:
		return req, stun.CodeBadRequest // RFC 6062 §5.1: TCP allocations need a TCP/TLS client
	case v[0] == protoTCP:
		req.TCP = true
	case v[0] != protoUDP:
		return req, stun.CodeUnsupportedTransProto
	}
	if !wellFormedLifetime(m) {
		return req, stun.CodeBadRequest
	}
	if m.Contains(stun.AttrReservationToken) && (m.Contains(stun.AttrEvenPort) ||
		m.Contains(stun.AttrRequestedAddressFamily) || m.Contains(attrAdditionalAddressFamily)) {
		return req, stun.CodeBadRequest // RFC 8656 §7.2: a token names one reserved port of one family
	}
	if v, err := m.Get(stun.AttrEvenPort); err == nil {
		if len(v) != 1 { // RFC 8656 §18.6: one byte
			return req, stun.CodeBadRequest
		}
		req.EvenPort, req.ReserveNext = true, v[0]&0x80 != 0
	}
	if v, err := m.Get(stun.AttrReservationToken); err == nil {
		if len(v) != 8 {
			return req, stun.CodeBadRequest
		}
		req.Token = v
	}
	fam, code := h.family(r)
	req.Family = fam
	return req, code
}

// family picks the relayed address family (RFC 8656 §7.2): REQUESTED-ADDRESS-FAMILY when
// given (440 if not configured); otherwise IPv4 with StrictAddressFamily, else the family of
// the listener the client used. ADDITIONAL-ADDRESS-FAMILY (IPv6) asks for IPv4 and IPv6:
// dual allocation is not offered, so the allocation is IPv4 only and its answer says so
// (noDualAllocation).
func (h *Handler) family(r *request) (int, stun.ErrorCode) {
	m := r.m
	if aaf, err := m.Get(attrAdditionalAddressFamily); err == nil {
		if m.Contains(stun.AttrRequestedAddressFamily) || len(aaf) != 4 || aaf[0] != 0x02 {
			return 0, stun.CodeBadRequest
		}
		if !h.table.HasFamily(4) {
			return 0, stun.CodeAddrFamilyNotSupported
		}
		return 4, 0
	}
	fam := 4
	if v, err := m.Get(stun.AttrRequestedAddressFamily); err == nil {
		switch {
		case len(v) != 4:
			return 0, stun.CodeBadRequest
		case v[0] == 0x01:
		case v[0] == 0x02:
			fam = 6
		default:
			return 0, stun.CodeAddrFamilyNotSupported
		}
		if !h.table.HasFamily(fam) {
			return 0, stun.CodeAddrFamilyNotSupported
		}
		return fam, 0
	}
	if !h.cfg.StrictAddressFamily && r.src.Key.Server.Addr().Is6() && h.table.HasFamily(6) {
		fam = 6
	}
	if !h.table.HasFamily(fam) {
		fam = 10 - fam // the only family there is
	}
	return fam, 0
}

// createError maps a table refusal to its code, counting quota refusals.
func (h *Handler) createError(err error) stun.ErrorCode {
	switch {
	case errors.Is(err, alloc.ErrQuotaTotal):
		h.stats.Quota.WithLabelValues(stats.QuotaTotal).Inc()
		return stun.CodeAllocQuotaReached
	case errors.Is(err, alloc.ErrQuotaUser):
		h.stats.Quota.WithLabelValues(stats.QuotaUser).Inc()
		return stun.CodeAllocQuotaReached
	case errors.Is(err, alloc.ErrExists):
		return stun.CodeAllocMismatch
	case errors.Is(err, alloc.ErrFamily):
		return stun.CodeAddrFamilyNotSupported
	case errors.Is(err, alloc.ErrNoPort):
		h.stats.Quota.WithLabelValues(stats.QuotaRelayPorts).Inc()
	}
	return stun.CodeInsufficientCapacity // no relay port, a stale reservation token, closing
}

// lifetime returns the lifetime to grant: the requested LIFETIME capped at MaxLifetime and
// never below DefaultLifetime; DefaultLifetime without LIFETIME (RFC 8656 §7.2, §7.3). A
// LIFETIME of 0 on Allocate is not an error; it gets the default.
func (h *Handler) lifetime(m *stun.Message) time.Duration {
	secs, ok := requestedLifetime(m)
	if !ok {
		return h.cfg.DefaultLifetime
	}
	d := time.Duration(secs) * time.Second
	return min(max(d, h.cfg.DefaultLifetime), h.cfg.MaxLifetime)
}

// requestedLifetime returns the LIFETIME attribute in seconds, if present and well-formed.
func requestedLifetime(m *stun.Message) (uint32, bool) {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// wellFormedLifetime reports whether m has no LIFETIME or a 4-byte one (RFC 8656 §18.4); a
// malformed one gets 400 rather than being taken as absent.
func wellFormedLifetime(m *stun.Message) bool {
	v, err := m.Get(stun.AttrLifetime)
	return err != nil || len(v) == 4
}

// lifetimeAttr is a LIFETIME attribute in whole seconds (RFC 8656 §18.4).
func lifetimeAttr(d time.Duration) stun.RawAttribute {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(d/time.Second))
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: v}
}

// refresh answers a Refresh request (RFC 8656 §7.3): LIFETIME 0 deletes the allocation,
// anything else sets a new lifetime from now; a REQUESTED-ADDRESS-FAMILY other than the
// allocation's gets 443.
func (h *Handler) refresh(r *request) {
	a := r.alloc
	if !wellFormedLifetime(r.m) {
		r.fail(stun.CodeBadRequest)
		return
	}
	if v, err := r.m.Get(stun.AttrRequestedAddressFamily); err == nil {
		switch {
		case len(v) != 4 || v[0] != 0x01 && v[0] != 0x02:
			r.fail(stun.CodeBadRequest) // malformed, not a family
			return
		case (v[0] == 0x01) != (a.Family() == 4):
			r.fail(stun.CodePeerAddrFamilyMismatch)
			return
		}
	}
	if secs, ok := requestedLifetime(r.m); ok && secs == 0 {
		r.h.table.End(a, alloc.EndDeletedClient)
		r.succeed(nil, lifetimeAttr(0))
		return
	}
	d := h.lifetime(r.m)
	a.SetLifetime(r.now, d)
	r.succeed(a, lifetimeAttr(d))
}
