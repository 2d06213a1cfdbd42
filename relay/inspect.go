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

// observeResponse counts a response pion sends (ferry_turn_requests_total) and remembers
// the nonces pion issues.
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
		if code == 401 || code == 438 {
			if n := stunAttr(b, uint16(stun.AttrNonce)); len(n) > 0 {
				s.nonces.observe(n)
			}
		}
		s.m.requests.WithLabelValues(methodLabel(method), requestResult(code)).Inc()
	}
}

// nonceCache holds the latest nonce pion issued. pion's nonces are valid for an hour
// (pion/turn v5 internal/server, not configurable); Ferry hands one out for at most
// nonceReuse after pion issued it, so it is always well inside that hour. When the cache is
// stale, the challenge goes to pion, which issues a fresh nonce.
type nonceCache struct {
	mu    sync.Mutex
	nonce string
	seen  time.Time
}

const nonceReuse = 10 * time.Minute

func (c *nonceCache) observe(n []byte) {
	c.mu.Lock()
	if string(n) != c.nonce {
		c.nonce, c.seen = string(n), time.Now() // pion's clock, not the injected one
	}
	c.mu.Unlock()
}

func (c *nonceCache) recent() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nonce, c.nonce != "" && time.Since(c.seen) < nonceReuse
}

// challenge answers an unauthenticated request with 401, NONCE and REALM (RFC 8489 §9.2.4),
// byte for byte as pion would: no reason phrase, the smaller the answer the better.
func (s *Server) challenge(m *stun.Message, nonce string, reply func([]byte) error) {
	resp, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(m.Type.Method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte{}},
		stun.NewNonce(nonce), stun.NewRealm(s.cfg.Realm))
	if err != nil {
		return
	}
	s.m.requests.WithLabelValues(methodLabel(uint16(m.Type.Method)), "401").Inc()
	_ = reply(resp.Raw)
}

// inspect applies Ferry's rules to a control message before pion sees it. It returns true to
// hand the message to pion, false when Ferry answered or dropped it. It covers what pion
// gets wrong or lacks: a denied peer anywhere in CreatePermission refuses the whole request
// with 403 (pion answers ChannelBind with 401 and installs the permissions before a denied
// one), channel numbers outside 0x4000-0x4FFF get 400, a different username on an existing
// allocation gets 441, a request on no allocation gets 437, disabled TCP allocations get 442,
// unsupported address families get 440, FINGERPRINT is verified, and unauthenticated
// answers over UDP are rate-limited per source.
//
// Ferry authenticates (MESSAGE-INTEGRITY) only when it is about to refuse, has to pick which
// secret's key pion uses, or records a client's deletion; otherwise pion verifies anyway.
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
		if s.allowUnauthenticated(t, client) {
			s.replyError(m, stun.CodeBadRequest, nil, reply)
		}
		return false
	}
	if !m.Contains(stun.AttrMessageIntegrity) {
		// A 401 challenge: the unauthenticated amplifier of C22, rate-limited; and answered
		// here with a nonce pion issued, when a recent one is known (half of pion's work per
		// allocation).
		if !s.allowUnauthenticated(t, client) {
			return false
		}
		if nonce, ok := s.nonces.recent(); ok {
			s.challenge(m, nonce, reply)
			return false
		}
		return true
	}
	var username stun.Username
	var realm stun.Realm
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return true // pion answers 400
	}
	existing := s.allocs.get(tupleKey{stream: t != UDP, server: server, client: client})
	v := s.judge(m, t, existing, username.String())
	// Every authenticated request is checked here, on the listener's readers, before it may
	// queue for pion's control loop: a flood of requests with a wrong password would
	// otherwise fill that queue and hold up other clients' Allocates. A failure costs about
	// two HMACs and gets pion's 401 only within the unauthenticated-answer limit.
	key, reason := s.authenticate(username.String(), realm.String(), m.Type.Method, client, m)
	if reason != "" {
		return s.allowUnauthenticated(t, client) // pion answers 401 and counts why
	}
	if v.code != 0 {
		for _, r := range v.denials {
			s.m.peerDenials.WithLabelValues(r).Inc()
		}
		s.replyError(m, v.code, key, reply) // carries MESSAGE-INTEGRITY with the same key
		return false
	}
	if v.deleted {
		existing.setEndReason(EndDeletedClient)
	}
	return true
}

// verdict is what inspect decided before authenticating.
type verdict struct {
	code    stun.ErrorCode // the refusal for an authenticated request; 0 passes it to pion
	denials []string       // peer policy reasons behind a 403
	deleted bool           // a Refresh with LIFETIME 0 on an existing allocation
}

// judge applies Ferry's rules to a decoded request.
func (s *Server) judge(m *stun.Message, t Transport, existing *alloc, username string) verdict {
	method := m.Type.Method
	switch method {
	case stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind, stun.MethodConnect:
		if existing == nil {
			return verdict{code: stun.CodeAllocMismatch} // RFC 8656 §7.3, §9.2, §12.2
		}
		if existing.username != username {
			return verdict{code: stun.CodeWrongCredentials} // RFC 8656 §5, RFC 8489 §9.2.4
		}
	}
	switch method {
	case stun.MethodAllocate:
		if existing != nil {
			return verdict{} // pion: a retransmission, or 437
		}
		if v, err := m.Get(stun.AttrRequestedTransport); err == nil && len(v) == 4 && v[0] == 6 {
			if !s.cfg.TCPAllocations {
				return verdict{code: stun.CodeUnsupportedTransProto} // RFC 8656 §7.2 step 3
			}
			if t == UDP {
				return verdict{code: stun.CodeBadRequest} // RFC 6062 §5.1: TCP allocations need TCP/TLS
			}
		}
		if aaf, err := m.Get(attrAdditionalAddressFamily); err == nil {
			// RFC 8656 §7.2: both family attributes, or an additional family other than
			// IPv6, is a bad request. Dual allocation is not offered: with IPv6 requested
			// as the additional family the allocation is IPv4 only.
			if m.Contains(stun.AttrRequestedAddressFamily) || len(aaf) != 4 || aaf[0] != 0x02 {
				return verdict{code: stun.CodeBadRequest}
			}
		}
		if v, err := m.Get(stun.AttrRequestedAddressFamily); err == nil && len(v) == 4 {
			if (v[0] == 0x01 && !s.relays.bind4.IsValid()) || (v[0] == 0x02 && !s.relays.bind6.IsValid()) {
				return verdict{code: stun.CodeAddrFamilyNotSupported} // RFC 8656 §7.2
			}
		}
	case stun.MethodRefresh:
		if v, err := m.Get(stun.AttrLifetime); err == nil && len(v) == 4 && binary.BigEndian.Uint32(v) == 0 {
			return verdict{deleted: true}
		}
	case stun.MethodCreatePermission:
		var out verdict
		added := 0 // permissions this request would add, not refresh
		for _, a := range m.Attributes {
			if a.Type != stun.AttrXORPeerAddress {
				continue
			}
			peer, ok := decodeXORAddr(a.Value, m.Raw)
			if !ok {
				return verdict{code: stun.CodeBadRequest}
			}
			if existing.permission(peer.Addr()) == 0 {
				added++
			}
			if _, reason := s.policy.check(peer.Addr()); reason != "" {
				out.denials = append(out.denials, reason)
			}
		}
		if len(out.denials) > 0 {
			// RFC 8656 §9.2: the request is refused as a whole; nothing is installed.
			out.code = stun.CodeForbidden
			return out
		}
		if existing.permissionCount()+added > s.cfg.MaxPermissions {
			return verdict{code: stun.CodeInsufficientCapacity} // RFC 8656 §9.2
		}
	case stun.MethodChannelBind:
		if v, err := m.Get(stun.AttrChannelNumber); err == nil && len(v) == 4 {
			hi := uint16(maxChannel)
			if s.cfg.LegacyChannelNumbers {
				hi = maxFramingChannel
			}
			if n := binary.BigEndian.Uint16(v); n < minChannel || n > hi {
				return verdict{code: stun.CodeBadRequest} // RFC 8656 §12
			}
		}
		return s.judgePeer(m, existing, false)
	case stun.MethodConnect:
		return s.judgePeer(m, existing, true)
	}
	return verdict{}
}

// judgePeer checks the XOR-PEER-ADDRESS of a ChannelBind or Connect, and that a new channel
// or permission stays within the allocation's cap.
func (s *Server) judgePeer(m *stun.Message, existing *alloc, tcp bool) verdict {
	v, err := m.Get(stun.AttrXORPeerAddress)
	if err != nil {
		return verdict{} // pion answers 400
	}
	peer, ok := decodeXORAddr(v, m.Raw)
	if !ok {
		return verdict{code: stun.CodeBadRequest}
	}
	if reason := s.peerPortDenied(peer, tcp); reason != "" {
		return verdict{code: stun.CodeForbidden, denials: []string{reason}} // RFC 8656 §12.2, RFC 6062 §5.2
	}
	if !tcp && ((existing.permission(peer.Addr()) == 0 && existing.permissionCount() >= s.cfg.MaxPermissions) ||
		(existing.channelByPeer(peer) == 0 && existing.channelCount() >= s.cfg.MaxPermissions)) {
		return verdict{code: stun.CodeInsufficientCapacity}
	}
	return verdict{}
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
	if !s.allowUnauthenticated(t, client) {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := m.Decode(); err != nil {
		s.m.drop(dropMalformed)
		return
	}
	var unknown stun.UnknownAttributes
	for _, a := range m.Attributes {
		if a.Type.Required() && !bindingKnown(a.Type) {
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

// bindingKnown reports the comprehension-required attributes Ferry understands in a Binding
// request (stun.AttrType.Known rebuilds a map on every call).
func bindingKnown(t stun.AttrType) bool {
	switch t {
	case stun.AttrMappedAddress, stun.AttrUsername, stun.AttrMessageIntegrity, stun.AttrErrorCode,
		stun.AttrUnknownAttributes, stun.AttrRealm, stun.AttrNonce, stun.AttrXORMappedAddress,
		stun.AttrPriority, stun.AttrUseCandidate, stun.AttrMessageIntegritySHA256, stun.AttrUserhash,
		stun.AttrPasswordAlgorithm:
		return true
	}
	return false
}

// allowUnauthenticated rate-limits answers that need no credentials, over UDP only: a TCP or
// TLS client has completed a handshake, so its address is not spoofed and cannot be made a
// reflection victim.
func (s *Server) allowUnauthenticated(t Transport, client netip.AddrPort) bool {
	if t != UDP || s.unauth.allow(client.Addr(), s.now()) {
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
