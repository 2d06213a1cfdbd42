// Package control is the relay's TURN control plane: it decodes, authenticates and answers
// STUN requests (RFC 8489) and TURN requests (RFC 8656 Allocate, Refresh, CreatePermission,
// ChannelBind; RFC 6062 Connect and ConnectionBind) with pion/stun, against the allocation
// table. Each request is decoded once and its MESSAGE-INTEGRITY checked once.
package control

import (
	"cmp"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

// Defaults for Config's zero values.
const (
	DefaultNonceLifetime      = time.Hour        // RFC 8489 §9.2 leaves it to the server
	DefaultLifetime           = 10 * time.Minute // RFC 8656 §7.2: LIFETIME absent or smaller
	DefaultMaxLifetime        = time.Hour        // RFC 8656 §7.2: the server's cap
	DefaultPermissionLifetime = 5 * time.Minute  // RFC 8656 §9
	DefaultChannelLifetime    = 10 * time.Minute // RFC 8656 §12
	DefaultMaxPermissions     = 64               // a call needs a handful: the peer's candidates
	DefaultMaxChannels        = 64               // a call binds one per peer candidate pair
	// DefaultUnauthRate and DefaultUnauthBurst pace answers without credentials per source
	// address. A browser starting a call needs two over UDP (a Binding for its server-
	// reflexive candidate, the 401 to its first Allocate) per network interface, then a
	// Binding every 10 s while the call lasts (Chromium 156, measured): 200 browsers behind
	// one NAT address starting at once need 400-800, and 20-40 a second during their calls.
	DefaultUnauthRate  = 100
	DefaultUnauthBurst = 1000
)

// Config configures a Handler.
type Config struct {
	Realm string              // the long-term credential realm (RFC 8489 §9.2); required
	Auth  *auth.Authenticator // verifies usernames; required
	Table *alloc.Table        // required
	Stats *stats.Relay        // required
	// NonceLifetime is how long a nonce is valid; then requests get 438 with a fresh one.
	NonceLifetime time.Duration
	// DefaultLifetime is the lifetime granted without LIFETIME, and the least one granted;
	// MaxLifetime caps a requested one (RFC 8656 §7.2).
	DefaultLifetime, MaxLifetime time.Duration
	// PermissionLifetime and ChannelLifetime are fixed by RFC 8656 (§9, §12); tests shorten them.
	PermissionLifetime, ChannelLifetime time.Duration
	// Limits are the quotas, caps and paces; SetLimits replaces them while running.
	Limits Limits
	// TCPAllocations enables RFC 6062 TCP allocations.
	TCPAllocations bool
	// LegacyChannelNumbers accepts ChannelBind for 0x5000-0x7FFF (RFC 5766 clients).
	LegacyChannelNumbers bool
	// StrictAddressFamily allocates IPv4 when REQUESTED-ADDRESS-FAMILY is absent (RFC 8656
	// §7.2); otherwise the relay follows the family of the listener the client used.
	StrictAddressFamily bool
	// Now is the clock of nonces and credentials; nil means time.Now.
	Now func() time.Time
	// Logger gets debug lines (never an address or a username); nil discards.
	Logger *slog.Logger
}

// Limits are the quotas, the bandwidth caps and the pace of unauthenticated answers: what
// an operator may change while Ferry runs (SetLimits).
type Limits struct {
	// MaxPermissions caps the permissions of one allocation, MaxChannels its channel
	// bindings (RFC 8656 §9.2, §12.2: 508 beyond). Zero means the defaults (64 each).
	MaxPermissions, MaxChannels int
	// MaxAllocations and MaxAllocationsPerUser cap live allocations in total and per user
	// id (RFC 8656 §7.2: 486 beyond); zero means no cap.
	MaxAllocations, MaxAllocationsPerUser int
	// Bandwidth are the data path's bandwidth caps (alloc.Caps).
	Bandwidth alloc.Caps
	// UnauthRate (answers per second) and UnauthBurst pace answers sent without credentials
	// over UDP, per source address (unauth.go). Zero means the defaults; a negative rate, no
	// pacing.
	UnauthRate  float64
	UnauthBurst int
}

// Handler answers control requests. It is safe for concurrent use; requests of one 5-tuple
// must come from one goroutine at a time (a listener's reader or a connection's), which
// keeps each allocation's requests in order.
type Handler struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	table  *alloc.Table
	stats  *stats.Relay
	nonces *nonces
	unauth *unauthLimiter
	limits atomic.Pointer[Limits]
	// draining refuses new allocations (drain.go).
	draining atomic.Bool
	msgs     sync.Pool // *stun.Message
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Realm == "" || cfg.Auth == nil || cfg.Table == nil || cfg.Stats == nil {
		return nil, errors.New("relay: the control plane needs a realm, an authenticator, a table and stats")
	}
	cfg.NonceLifetime = cmp.Or(cfg.NonceLifetime, DefaultNonceLifetime)
	cfg.DefaultLifetime = cmp.Or(cfg.DefaultLifetime, DefaultLifetime)
	cfg.MaxLifetime = max(cmp.Or(cfg.MaxLifetime, DefaultMaxLifetime), cfg.DefaultLifetime)
	cfg.PermissionLifetime = cmp.Or(cfg.PermissionLifetime, DefaultPermissionLifetime)
	cfg.ChannelLifetime = cmp.Or(cfg.ChannelLifetime, DefaultChannelLifetime)
	h := &Handler{cfg: cfg, now: cfg.Now, log: cfg.Logger, table: cfg.Table, stats: cfg.Stats,
		nonces: newNonces(cfg.NonceLifetime), unauth: newUnauthLimiter()}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.msgs.New = func() any { return new(stun.Message) }
	h.SetLimits(cfg.Limits)
	return h, nil
}

// SetLimits replaces the quotas, caps and paces, atomically for each request and each
// batch of data. Live allocations keep the permissions, channels and allocations they hold
// beyond a lowered quota; a lowered bandwidth cap holds from the next batch.
func (h *Handler) SetLimits(l Limits) {
	l.MaxPermissions = cmp.Or(l.MaxPermissions, DefaultMaxPermissions)
	l.MaxChannels = cmp.Or(l.MaxChannels, DefaultMaxChannels)
	l.UnauthRate = cmp.Or(l.UnauthRate, DefaultUnauthRate)
	l.UnauthBurst = cmp.Or(l.UnauthBurst, DefaultUnauthBurst)
	h.limits.Store(&l)
	h.table.SetCaps(l.Bandwidth)
	h.unauth.set(l.UnauthRate, l.UnauthBurst)
	for kind, v := range map[string]int{"total": l.MaxAllocations, "per_user": l.MaxAllocationsPerUser,
		"permissions": l.MaxPermissions, "channels": l.MaxChannels} {
		h.stats.Limit.WithLabelValues(kind).Set(float64(v))
	}
	for scope, v := range map[string]int64{"allocation": l.Bandwidth.AllocationBitrate,
		"user": l.Bandwidth.UserBitrate, "server": l.Bandwidth.TotalBitrate} {
		h.stats.Bandwidth.WithLabelValues(scope).Set(float64(v))
	}
}

// Limits returns the limits in force, defaults filled in.
func (h *Handler) Limits() Limits { return *h.limits.Load() }

// Source says where a request came from and how to answer it.
type Source struct {
	Key    alloc.Key    // the 5-tuple
	Client alloc.Client // the way back to the client, for a new allocation
	// Reply sends an answer to the client. It must not keep b.
	Reply func(b []byte)
}

// Handle answers one STUN message from a client (a whole message: the listener frames it).
// Malformed messages, a wrong FINGERPRINT, responses and indications are dropped silently
// (RFC 8489 §6.3). It returns the peer connection when a ConnectionBind succeeded: the
// caller's stream then carries that connection's bytes (RFC 6062 §5.4).
func (h *Handler) Handle(raw []byte, src *Source) *alloc.PeerConn {
	if !wire.FingerprintOK(raw) {
		h.stats.Drop(stats.DropBadFingerprint) // RFC 8489 §14.7
		return nil
	}
	m := h.msgs.Get().(*stun.Message)
	defer h.msgs.Put(m)
	m.Reset()
	m.Raw = append(m.Raw[:0], raw...)
	if err := m.Decode(); err != nil {
		h.stats.Drop(stats.DropMalformed)
		return nil
	}
	if m.Type.Class != stun.ClassRequest {
		h.stats.Drop(stats.DropUnexpected) // responses, and indications other than Send
		return nil
	}
	r := &request{h: h, m: m, src: src, now: h.now()}
	if m.Type.Method == stun.MethodBinding {
		h.binding(r)
		return nil
	}
	if !r.authenticate() {
		return nil
	}
	return h.dispatch(r)
}

// dispatch runs an authenticated request's method.
func (h *Handler) dispatch(r *request) *alloc.PeerConn {
	if r.owner() {
		// A request whose answer was lost gets the same answer again (C26).
		if resp := r.alloc.Retransmission(r.m.TransactionID); resp != nil {
			r.src.Reply(resp)
			return nil
		}
	}
	switch method := r.m.Type.Method; {
	case method == stun.MethodAllocate || method == stun.MethodConnectionBind:
	case r.alloc == nil:
		r.fail(stun.CodeAllocMismatch) // RFC 8656 §7.3, §9.2, §12.2; RFC 6062 §5.2
		return nil
	case !r.owner():
		r.fail(stun.CodeWrongCredentials) // another user's credentials (RFC 8656 §5; C29)
		return nil
	}
	switch r.m.Type.Method {
	case stun.MethodAllocate:
		h.allocate(r)
	case stun.MethodRefresh:
		h.refresh(r)
	case stun.MethodCreatePermission:
		h.createPermission(r)
	case stun.MethodChannelBind:
		h.channelBind(r)
	case stun.MethodConnect:
		h.connect(r)
	case stun.MethodConnectionBind:
		return h.connectionBind(r)
	default:
		r.fail(stun.CodeBadRequest)
	}
	return nil
}

// request is one request being answered.
type request struct {
	h      *Handler
	m      *stun.Message
	src    *Source
	now    time.Time
	key    []byte            // the long-term key, once authenticated
	user   string            // USERNAME, once read
	userID string            // the user id of a credential verified by its own keys
	alloc  *alloc.Allocation // the allocation of the 5-tuple, if any
}

// method is the request's method as a metric label.
func (r *request) method() string { return methodLabel(r.m.Type.Method) }

func methodLabel(m stun.Method) string {
	switch m {
	case stun.MethodBinding:
		return "binding"
	case stun.MethodAllocate:
		return "allocate"
	case stun.MethodRefresh:
		return "refresh"
	case stun.MethodCreatePermission:
		return "create_permission"
	case stun.MethodChannelBind:
		return "channel_bind"
	case stun.MethodConnect:
		return "connect"
	case stun.MethodConnectionBind:
		return "connection_bind"
	}
	return "other"
}

// client returns the client's IP address.
func (r *request) client() netip.Addr { return r.src.Key.Client.Addr() }

// allowUnauthenticated paces answers that need no credentials, over UDP only: a TCP or TLS
// client has completed a handshake, so its address is not spoofed and cannot be made a
// reflection victim.
func (r *request) allowUnauthenticated() bool {
	if r.src.Key.Transport != wire.UDP || r.h.unauth.allow(r.client(), r.now) {
		return true
	}
	r.h.stats.Drop(stats.DropRateLimited)
	return false
}

// succeed answers with a success response carrying attrs, signed with the request's key,
// and remembers it for a retransmission when the 5-tuple has an allocation.
func (r *request) succeed(a *alloc.Allocation, attrs ...stun.Setter) {
	resp := r.build(stun.ClassSuccessResponse, attrs...)
	if resp == nil {
		return
	}
	r.h.stats.Requests.WithLabelValues(r.method(), "success").Inc()
	if a != nil && a.Username == r.user {
		a.Answered(r.m.TransactionID, resp)
	}
	r.src.Reply(resp)
}

// fail answers with an error response; once authenticated it is signed (RFC 8489 §9.2.4)
// and carries the reason phrase. Without authentication the reason phrase is left out: the
// smaller the answer to an unauthenticated request, the smaller an amplifier (C22).
func (r *request) fail(code stun.ErrorCode, extra ...stun.Setter) {
	var ec stun.Setter = &stun.ErrorCodeAttribute{Code: code}
	if r.key != nil {
		ec = code
	}
	attrs := append([]stun.Setter{ec}, extra...)
	resp := r.build(stun.ClassErrorResponse, attrs...)
	if resp == nil || r.amplifies(resp) {
		return
	}
	r.h.stats.Requests.WithLabelValues(r.method(), stats.Result(int(code))).Inc()
	if r.owner() {
		r.alloc.Answered(r.m.TransactionID, resp)
	}
	r.src.Reply(resp)
}

// maxAmplification bounds an answer sent without credentials over UDP, in bytes of STUN
// message per byte of the request it answers (C22).
const maxAmplification = 2

// amplifies reports (and counts) an answer that must not be sent because it would amplify: an
// answer without credentials (no key: a 401, 438, 400, 420 or a Binding response) over UDP,
// where the source address can be forged, more than twice the size of its request. Over TCP
// and TLS the handshake proved the address. Browsers' requests are answered within the
// bound when the realm has at most 8 bytes (README: Running a public relay safely).
func (r *request) amplifies(resp []byte) bool {
	if r.key != nil || r.src.Key.Transport != wire.UDP || len(resp) <= maxAmplification*len(r.m.Raw) {
		return false
	}
	r.h.stats.Drop(stats.DropAmplification)
	return true
}

// failUnauthenticated answers without MESSAGE-INTEGRITY (400, 401, 420, 438), within the
// per-source pace over UDP.
func (r *request) failUnauthenticated(code stun.ErrorCode, extra ...stun.Setter) {
	if !r.allowUnauthenticated() {
		return
	}
	r.key = nil
	r.fail(code, extra...)
}

// build assembles an answer to the request: the same transaction id and method, attrs,
// MESSAGE-INTEGRITY with the request's key when it has one, and FINGERPRINT when the
// request carried one (RFC 8489 §7.3). No SOFTWARE (C22).
func (r *request) build(class stun.MessageClass, attrs ...stun.Setter) []byte {
	setters := make([]stun.Setter, 0, len(attrs)+4)
	setters = append(setters, stun.NewTransactionIDSetter(r.m.TransactionID), stun.NewType(r.m.Type.Method, class))
	setters = append(setters, attrs...)
	if r.key != nil {
		setters = append(setters, stun.MessageIntegrity(r.key))
	}
	if r.m.Contains(stun.AttrFingerprint) {
		setters = append(setters, stun.Fingerprint)
	}
	resp := r.h.msgs.Get().(*stun.Message)
	defer r.h.msgs.Put(resp)
	resp.Reset()
	if err := resp.Build(setters...); err != nil {
		return nil
	}
	return append([]byte(nil), resp.Raw...)
}

// deny counts a peer-policy refusal.
func (r *request) deny(reasons ...string) {
	for _, reason := range reasons {
		r.h.stats.PeerDenials.WithLabelValues(reason).Inc()
	}
	r.fail(stun.CodeForbidden) // RFC 8656 §9.2, §12.2
}
