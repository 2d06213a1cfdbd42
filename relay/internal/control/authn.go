package control

import (
	"unicode/utf8"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/pion/stun/v4"
)

// authenticate checks a request's long-term credentials (RFC 8489 §9.2.4), in this order:
// unknown comprehension-required attributes (420), over-long text attributes (400), no
// MESSAGE-INTEGRITY (401 with a nonce), no USERNAME, REALM or NONCE (400), a stale nonce or
// one never issued (438 with a fresh one), the wrong realm (401); then the
// username and MESSAGE-INTEGRITY, once: with the cached key of the 5-tuple's allocation
// when the username is the allocation's (so a credential that expired during the call
// keeps working, C15), else with the credential's keys. It answers every failure itself and
// then returns false.
func (r *request) authenticate() bool {
	m := r.m
	if unknown := unknownRequired(m); len(unknown) > 0 {
		r.failUnauthenticated(stun.CodeUnknownAttribute, stun.UnknownAttributes(unknown)) // RFC 8489 §6.3.1
		return false
	}
	if !textAttrsFit(m) {
		r.failUnauthenticated(stun.CodeBadRequest)
		return false
	}
	if !m.Contains(stun.AttrMessageIntegrity) {
		r.challenge(stun.CodeUnauthorized)
		return false
	}
	var username stun.Username
	var realm stun.Realm
	var nonce stun.Nonce
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil || nonce.GetFrom(m) != nil {
		r.failUnauthenticated(stun.CodeBadRequest)
		return false
	}
	if r.h.nonces.check(nonce.String(), r.client(), r.now) != nonceValid {
		// Stale, or never issued by this process for this client (forged, or from before a
		// restart): 438 with a fresh nonce lets a client recover at once (C12).
		r.challenge(stun.CodeStaleNonce)
		return false
	}
	if realm.String() != r.h.cfg.Realm {
		r.authFailed(auth.ReasonWrongRealm)
		return false
	}
	r.user = username.String()
	r.alloc = r.h.table.Lookup(r.src.Key)
	if owner := r.keyOwner(); owner != nil {
		key := owner.LongTermKey()
		if stun.MessageIntegrity(key).Check(m) != nil {
			r.authFailed(auth.ReasonBadIntegrity)
			return false
		}
		r.key = key
		return true
	}
	id, err := r.h.cfg.Auth.Lookup(r.user)
	if err != nil {
		r.authFailed(auth.Reason(err))
		return false
	}
	for _, pw := range id.Passwords {
		if key := auth.LongTermKey(r.user, r.h.cfg.Realm, pw); stun.MessageIntegrity(key).Check(m) == nil {
			r.key, r.userID = key, id.UserID
			return true
		}
	}
	r.authFailed(auth.ReasonBadIntegrity)
	return false
}

// keyOwner returns the allocation whose cached key verifies this request: the 5-tuple's
// allocation when the username is its own, or, for a ConnectionBind on a new connection, the
// allocation of the peer connection it names (RFC 6062 §5.4).
func (r *request) keyOwner() *alloc.Allocation {
	if r.alloc != nil {
		if r.alloc.Username == r.user {
			return r.alloc
		}
		return nil
	}
	if r.m.Type.Method == stun.MethodConnectionBind {
		if id, ok := connectionID(r.m); ok {
			if a := r.h.table.ConnectionOwner(id); a != nil && a.Username == r.user {
				return a
			}
		}
	}
	return nil
}

// owner reports whether the request comes from the user of the 5-tuple's allocation.
func (r *request) owner() bool { return r.alloc != nil && r.alloc.Username == r.user && r.key != nil }

// authFailed counts a failed authentication and challenges the client again (401 with the
// realm and a fresh nonce).
func (r *request) authFailed(reason string) {
	r.h.stats.AuthFailures.WithLabelValues(reason).Inc()
	r.h.log.Debug("authentication failed", "reason", reason, "method", r.method())
	r.challenge(stun.CodeUnauthorized)
}

// challenge answers 401 or 438 with NONCE and REALM (RFC 8489 §9.2.4), within the pace of
// unauthenticated answers.
func (r *request) challenge(code stun.ErrorCode) {
	if !r.allowUnauthenticated() {
		return
	}
	r.key = nil
	r.fail(code, stun.NewNonce(r.h.nonces.issue(r.client(), r.now)), stun.NewRealm(r.h.cfg.Realm))
}

// knownRequired reports the comprehension-required attributes Ferry understands in a
// request (RFC 8489 §14, RFC 8656 §18, RFC 6062 §6.2). DONT-FRAGMENT (RFC 8656 §7.2: a
// server that cannot honour it answers 420), ACCESS-TOKEN (RFC 7635, not implemented) and
// RFC 5780's CHANGE-REQUEST are not among them.
func knownRequired(t stun.AttrType) bool {
	switch t {
	case stun.AttrMappedAddress, stun.AttrUsername, stun.AttrMessageIntegrity, stun.AttrErrorCode,
		stun.AttrUnknownAttributes, stun.AttrChannelNumber, stun.AttrLifetime, stun.AttrXORPeerAddress,
		stun.AttrData, stun.AttrRealm, stun.AttrNonce, stun.AttrXORRelayedAddress,
		stun.AttrRequestedAddressFamily, stun.AttrEvenPort, stun.AttrRequestedTransport,
		stun.AttrMessageIntegritySHA256, stun.AttrPasswordAlgorithm, stun.AttrUserhash,
		stun.AttrXORMappedAddress, stun.AttrReservationToken, stun.AttrPriority, stun.AttrUseCandidate,
		stun.AttrConnectionID:
		return true
	}
	return false
}

// unknownRequired lists the request's comprehension-required attributes that Ferry does not
// understand (at most 8: enough to tell the client, small enough not to amplify).
func unknownRequired(m *stun.Message) stun.UnknownAttributes {
	var out stun.UnknownAttributes
	for _, a := range m.Attributes {
		if a.Type.Required() && !knownRequired(a.Type) && len(out) < 8 {
			out = append(out, a.Type)
		}
	}
	return out
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

// binding answers a STUN Binding request on any listener, without credentials (RFC 8489
// §7.3): XOR-MAPPED-ADDRESS only (plus FINGERPRINT when the request had one), no SOFTWARE,
// no RFC 5780 attributes, so the answer amplifies little (C22): 32 bytes for a 20-byte
// request from IPv4. An IPv6 answer is 44 bytes: over UDP, only a request of 22 bytes or
// more gets it (one with FINGERPRINT: 28 to 52).
func (h *Handler) binding(r *request) {
	if unknown := unknownRequired(r.m); len(unknown) > 0 {
		r.failUnauthenticated(stun.CodeUnknownAttribute, unknown)
		return
	}
	if !r.allowUnauthenticated() {
		return
	}
	resp := r.build(stun.ClassSuccessResponse, alloc.XORAddr(stun.AttrXORMappedAddress, r.src.Key.Client))
	if resp == nil || r.amplifies(resp) {
		return // a bare 20-byte Binding from IPv6 gets 44 bytes: over UDP, no answer
	}
	h.stats.Bindings.WithLabelValues(r.src.Key.Transport.String()).Inc()
	h.stats.Requests.WithLabelValues("binding", "success").Inc()
	r.src.Reply(resp)
}
