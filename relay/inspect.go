package relay

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pion/stun/v4"
	"golang.org/x/time/rate"
)

// attrAdditionalAddressFamily is ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
const attrAdditionalAddressFamily stun.AttrType = 0x8000

// STUN methods (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1).
const (
	methodBinding          = 0x001
	methodAllocate         = 0x003
	methodRefresh          = 0x004
	methodCreatePermission = 0x008
	methodChannelBind      = 0x009
	methodConnect          = 0x00A
	methodConnectionBind   = 0x00B
)

func methodLabel(m uint16) string {
	switch m {
	case methodBinding:
		return "binding"
	case methodAllocate:
		return "allocate"
	case methodRefresh:
		return "refresh"
	case methodCreatePermission:
		return "create_permission"
	case methodChannelBind:
		return "channel_bind"
	case methodConnect:
		return "connect"
	case methodConnectionBind:
		return "connection_bind"
	}
	return "other"
}

// splitType splits a STUN message type into method and class (RFC 8489 §5).
func splitType(t uint16) (method uint16, class uint16) {
	method = t&0x000F | (t&0x00E0)>>1 | (t&0x3E00)>>2
	class = (t>>4)&1 | (t>>7)&2
	return method, class
}

// observeResponse counts a response pion sends (ferry_turn_requests_total).
func (s *Server) observeResponse(b []byte) {
	if kind, size, _ := nextFrame(b, false); kind != frameSTUN || size != len(b) {
		return
	}
	method, class := splitType(be16(b))
	switch class {
	case 2:
		s.m.requests.WithLabelValues(methodLabel(method), "success").Inc()
	case 3:
		code := 0
		if v := stunAttr(b, uint16(stun.AttrErrorCode)); len(v) >= 4 {
			code = int(v[2]&0x7)*100 + int(v[3])
		}
		s.m.requests.WithLabelValues(methodLabel(method), requestResult(code)).Inc()
	}
}

// inspect applies Ferry's rules to a control message before pion sees it. It returns true to
// hand the message to pion, false when Ferry answered or dropped it. It covers what pion
// gets wrong or lacks: a denied peer anywhere in CreatePermission refuses the whole request
// with 403 (pion answers ChannelBind with 401 and installs the permissions before a denied
// one), channel numbers outside 0x4000-0x4FFF get 400, a different username on an existing
// allocation gets 441, disabled TCP allocations get 442, unsupported address families get
// 440, FINGERPRINT is verified, and unauthenticated answers are rate-limited per source.
func (s *Server) inspect(raw []byte, t Transport, server, client netip.AddrPort, reply func([]byte) error) bool {
	if !fingerprintOK(raw) {
		s.m.drop(dropBadFingerprint) // RFC 8489 §14.7: silently discard
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := m.Decode(); err != nil {
		s.m.drop(dropMalformed)
		return false
	}
	if m.Type.Class != stun.ClassRequest {
		s.m.drop(dropUnexpected) // indications other than Send, or responses
		return false
	}
	if !textAttrsFit(m) {
		if s.allowUnauthenticated(client) {
			s.replyError(m, stun.CodeBadRequest, nil, reply)
		}
		return false
	}
	if !m.Contains(stun.AttrMessageIntegrity) {
		// pion answers with a 401 challenge: the unauthenticated amplifier of C22.
		return s.allowUnauthenticated(client)
	}
	var username stun.Username
	var realm stun.Realm
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return true // pion answers 400
	}
	key, reason := s.authenticate(username.String(), realm.String(), m.Type.Method, client, m)
	if reason != "" {
		return s.allowUnauthenticated(client) // pion answers 401 or 438 and counts why
	}

	// Authenticated. Ferry's own answers carry MESSAGE-INTEGRITY with the same key.
	existing := s.allocs.get(tupleKey{stream: t != UDP, server: server, client: client})
	refuse := func(code stun.ErrorCode, extra ...stun.Setter) bool {
		s.replyError(m, code, key, reply, extra...)
		return false
	}
	if existing != nil && existing.username != username.String() &&
		m.Type.Method != stun.MethodAllocate && m.Type.Method != stun.MethodConnectionBind {
		return refuse(stun.CodeWrongCredentials) // RFC 8656 §5, RFC 8489 §9.2.4
	}
	switch m.Type.Method {
	case stun.MethodAllocate:
		if existing != nil {
			return true // pion: retransmission or 437
		}
		if v, err := m.Get(stun.AttrRequestedTransport); err == nil && len(v) == 4 && v[0] == 6 {
			if !s.cfg.TCPAllocations {
				return refuse(stun.CodeUnsupportedTransProto) // RFC 8656 §7.2 step 3
			}
			if t == UDP {
				return refuse(stun.CodeBadRequest) // RFC 6062 §5.1: TCP allocations need TCP/TLS
			}
		}
		if aaf, err := m.Get(attrAdditionalAddressFamily); err == nil {
			// RFC 8656 §7.2: both family attributes, or an additional family other than
			// IPv6, is a bad request. Dual allocation is not offered: with IPv6 requested
			// as the additional family the allocation is IPv4 only.
			if m.Contains(stun.AttrRequestedAddressFamily) || len(aaf) != 4 || aaf[0] != 0x02 {
				return refuse(stun.CodeBadRequest)
			}
		}
		if v, err := m.Get(stun.AttrRequestedAddressFamily); err == nil && len(v) == 4 {
			if (v[0] == 0x01 && !s.relays.bind4.IsValid()) || (v[0] == 0x02 && !s.relays.bind6.IsValid()) {
				return refuse(stun.CodeAddrFamilyNotSupported) // RFC 8656 §7.2
			}
		}
	case stun.MethodRefresh:
		if v, err := m.Get(stun.AttrLifetime); err == nil && len(v) == 4 &&
			binary.BigEndian.Uint32(v) == 0 && existing != nil {
			existing.setEndReason(EndDeletedClient)
		}
	case stun.MethodCreatePermission:
		denied := false
		for _, a := range m.Attributes {
			if a.Type != stun.AttrXORPeerAddress {
				continue
			}
			peer, ok := decodeXORAddr(a.Value, m.Raw)
			if !ok {
				return true // pion answers 400
			}
			if _, reason := s.policy.check(peer.Addr()); reason != "" {
				s.m.peerDenials.WithLabelValues(reason).Inc()
				denied = true
			}
		}
		if denied {
			// RFC 8656 §9.2: the request is refused as a whole; nothing is installed.
			return refuse(stun.CodeForbidden)
		}
	case stun.MethodChannelBind:
		if v, err := m.Get(stun.AttrChannelNumber); err == nil && len(v) == 4 {
			hi := uint16(maxChannel)
			if s.cfg.LegacyChannelNumbers {
				hi = maxFramingChannel
			}
			if n := binary.BigEndian.Uint16(v); n < minChannel || n > hi {
				return refuse(stun.CodeBadRequest) // RFC 8656 §12
			}
		}
		if peer, ok := peerOf(m); ok {
			if reason := s.peerPortDenied(peer, false); reason != "" {
				s.m.peerDenials.WithLabelValues(reason).Inc()
				return refuse(stun.CodeForbidden) // RFC 8656 §12.2
			}
		}
	case stun.MethodConnect:
		if peer, ok := peerOf(m); ok {
			if reason := s.peerPortDenied(peer, true); reason != "" {
				s.m.peerDenials.WithLabelValues(reason).Inc()
				return refuse(stun.CodeForbidden) // RFC 6062 §5.2
			}
		}
	}
	return true
}

// textAttrsFit checks RFC 8489's limits: USERNAME under 509 bytes (§14.3), REALM and NONCE
// under 128 characters and 763 bytes (§14.9, §14.10).
func textAttrsFit(m *stun.Message) bool {
	if v, err := m.Get(stun.AttrUsername); err == nil && len(v) >= 509 {
		return false
	}
	for _, t := range []stun.AttrType{stun.AttrRealm, stun.AttrNonce} {
		if v, err := m.Get(t); err == nil && (len(v) > 763 || utf8.RuneCount(v) > 127) {
			return false
		}
	}
	return true
}

func peerOf(m *stun.Message) (netip.AddrPort, bool) {
	v, err := m.Get(stun.AttrXORPeerAddress)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return decodeXORAddr(v, m.Raw)
}

// peerPortDenied applies the peer policy to a transport address: the IP must be allowed, a
// relay IP only at an active relayed transport address, a host address never at one of
// Ferry's own service ports. It returns the denial reason, or "".
func (s *Server) peerPortDenied(peer netip.AddrPort, tcp bool) string {
	class, reason := s.policy.check(peer.Addr())
	switch class {
	case 0:
		return reason
	case peerRelayOnly:
		if tcp {
			if s.relays.tcpByPublic(peer) == nil {
				return DenyNotRelayedAddr
			}
		} else if s.relays.byPort(peer.Addr(), peer.Port()) == nil {
			return DenyNotRelayedAddr
		}
	case peerLocal:
		if s.servicePorts.has(peer.Port()) {
			return DenyServicePort
		}
	}
	if peer.Port() == 0 {
		return DenyInvalid
	}
	return ""
}

func (s *Server) replyError(m *stun.Message, code stun.ErrorCode, key []byte, reply func([]byte) error, extra ...stun.Setter) {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(m.Type.Method, stun.ClassErrorResponse),
		code,
	}
	setters = append(setters, extra...)
	if key != nil {
		setters = append(setters, stun.MessageIntegrity(key))
	}
	if m.Contains(stun.AttrFingerprint) {
		setters = append(setters, stun.Fingerprint)
	}
	resp, err := stun.Build(setters...)
	if err != nil {
		return
	}
	s.m.requests.WithLabelValues(methodLabel(uint16(m.Type.Method)), requestResult(int(code))).Inc()
	_ = reply(resp.Raw)
}

// answerBinding answers a STUN Binding request on any listener, without credentials
// (RFC 8489 §7.3). The response carries XOR-MAPPED-ADDRESS only (plus FINGERPRINT when the
// request had one): no SOFTWARE, no RFC 5780 attributes, a small amplification factor (C22).
func (s *Server) answerBinding(raw []byte, t Transport, client netip.AddrPort, reply func([]byte) error) {
	if !fingerprintOK(raw) {
		s.m.drop(dropBadFingerprint)
		return
	}
	if !s.allowUnauthenticated(client) {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := m.Decode(); err != nil {
		s.m.drop(dropMalformed)
		return
	}
	var unknown stun.UnknownAttributes
	for _, a := range m.Attributes {
		if a.Type.Required() && !a.Type.Known() {
			unknown = append(unknown, a.Type)
		}
	}
	if len(unknown) > 0 {
		s.replyError(m, stun.CodeUnknownAttribute, nil, reply, unknown) // RFC 8489 §6.3.1
		return
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: client.Addr().AsSlice(), Port: int(client.Port())},
	}
	if m.Contains(stun.AttrFingerprint) {
		setters = append(setters, stun.Fingerprint)
	}
	resp, err := stun.Build(setters...)
	if err != nil {
		return
	}
	s.m.bindings.WithLabelValues(t.String()).Inc()
	s.m.requests.WithLabelValues("binding", "success").Inc()
	_ = reply(resp.Raw)
}

func (s *Server) allowUnauthenticated(client netip.AddrPort) bool {
	if s.unauth.allow(client.Addr(), s.now()) {
		return true
	}
	s.m.drop(dropRateLimited)
	return false
}

// unauthLimiter is a per-source token bucket for responses sent without authentication
// (401 challenges, Binding responses): spoofed requests must not turn Ferry into an
// amplifier (C22; RFC 8489 §16, RFC 8656 §21). When too many sources are tracked, new ones
// share one bucket.
type unauthLimiter struct {
	mu       sync.Mutex
	limit    rate.Limit
	burst    int
	buckets  map[netip.Addr]*rate.Limiter
	overflow *rate.Limiter
}

const maxLimiterSources = 65536

func newUnauthLimiter(perSecond float64, burst int) *unauthLimiter {
	return &unauthLimiter{limit: rate.Limit(perSecond), burst: burst,
		buckets:  map[netip.Addr]*rate.Limiter{},
		overflow: rate.NewLimiter(rate.Limit(perSecond)*16, burst*16)}
}

func (u *unauthLimiter) allow(ip netip.Addr, now time.Time) bool {
	if u.limit <= 0 {
		return true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	l, ok := u.buckets[ip]
	if !ok {
		if len(u.buckets) >= maxLimiterSources {
			return u.overflow.AllowN(now, 1)
		}
		l = rate.NewLimiter(u.limit, u.burst)
		u.buckets[ip] = l
	}
	return l.AllowN(now, 1)
}

// sweep forgets sources whose bucket is full again.
func (u *unauthLimiter) sweep(now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for ip, l := range u.buckets {
		if l.TokensAt(now) >= float64(u.burst) {
			delete(u.buckets, ip)
		}
	}
}
