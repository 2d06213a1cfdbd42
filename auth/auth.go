// Package auth issues and verifies TURN long-term credentials: time-limited TURN REST
// credentials (draft-uberti-behave-turn-rest-00) and optional static users.
package auth

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // RFC 8489 §9.2.2 defines the long-term key as MD5.
	"crypto/sha1" //nolint:gosec // draft-uberti-behave-turn-rest-00 §2.2 defines HMAC-SHA1.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Sentinel errors returned by Lookup and ParseRESTUsername. Callers branch on them with errors.Is;
// Reason maps them to the bounded label set used in metrics.
var (
	// ErrMalformed: the username is not "<expiry unix seconds>[:<user id>]" with a canonical
	// decimal expiry (digits only: no sign, no leading zero, no spaces; at most 19 digits).
	ErrMalformed = errors.New("auth: malformed username")
	// ErrExpired: the REST credential's expiry is not after the current time.
	ErrExpired = errors.New("auth: credential expired")
	// ErrTooFarAhead: the expiry lies more than MaxTTL plus ClockSkew in the future, which is
	// what a millisecond (13 digits), microsecond or nanosecond timestamp read as seconds,
	// or a hand-made "forever" credential, looks like.
	ErrTooFarAhead = errors.New("auth: credential expiry too far ahead")
	// ErrUnknownUser: the username is neither a static user nor a REST username, or REST
	// credentials are not configured.
	ErrUnknownUser = errors.New("auth: unknown user")
	// ErrBadUserID: a user id handed to Issue is too long or contains control characters.
	ErrBadUserID = errors.New("auth: invalid user id")
	// ErrBadTTL: a TTL handed to Issue is not positive or exceeds MaxTTL.
	ErrBadTTL = errors.New("auth: invalid ttl")
)

// Failure reasons as metric label values (a bounded set; never a user or an address).
const (
	ReasonMalformed    = "malformed"
	ReasonExpired      = "expired"
	ReasonTooFarAhead  = "too_far_ahead"
	ReasonUnknownUser  = "unknown_user"
	ReasonBadIntegrity = "bad_integrity"
	ReasonWrongRealm   = "wrong_realm"
)

// Reason returns the metric label for an error from Lookup, or "" when err is nil.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrExpired):
		return ReasonExpired
	case errors.Is(err, ErrTooFarAhead):
		return ReasonTooFarAhead
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	default:
		return ReasonUnknownUser
	}
}

// MaxUserIDLen caps a REST user id in bytes, so that "<11 digits>:<id>" stays well under the
// 509-byte USERNAME limit of RFC 8489 §14.3.
const MaxUserIDLen = 256

// maxExpiryDigits is the longest canonical expiry read as a number (int64 seconds): a
// millisecond (13 digits), microsecond (16) or nanosecond (19) timestamp is read, and then
// refused as too far ahead; more digits are malformed.
const maxExpiryDigits = 19

// Config configures an Authenticator.
type Config struct {
	// Secrets are the TURN REST shared secrets. The first one issues credentials; every one
	// verifies, so a secret can be rotated without dropping calls. May be empty when only
	// static users are configured.
	Secrets []string
	// StaticUsers maps a static username to its password, for legacy apps that cannot use
	// REST credentials. Static usernames never expire.
	StaticUsers map[string]string
	// MaxTTL is the longest credential lifetime Issue hands out and Lookup accepts
	// (expiry ≤ now + MaxTTL + ClockSkew). Must be positive.
	MaxTTL time.Duration
	// ClockSkew tolerates a credential service whose clock runs ahead of Ferry's.
	ClockSkew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authenticator issues and verifies long-term credentials. It is safe for concurrent use,
// also with Update, which replaces what it verifies while it runs.
type Authenticator struct {
	st  atomic.Pointer[authState]
	now func() time.Time
}

// authState is what an Authenticator verifies with: never changed once stored, replaced
// whole by Update.
type authState struct {
	secrets []string
	static  map[string]string
	maxTTL  time.Duration
	skew    time.Duration
}

// New returns an Authenticator, or an error when cfg cannot verify anything.
func New(cfg Config) (*Authenticator, error) {
	st, err := newState(cfg)
	if err != nil {
		return nil, err
	}
	a := &Authenticator{now: cfg.Now}
	if a.now == nil {
		a.now = time.Now
	}
	a.st.Store(st)
	return a, nil
}

func newState(cfg Config) (*authState, error) {
	if len(cfg.Secrets) == 0 && len(cfg.StaticUsers) == 0 {
		return nil, errors.New("auth: no secrets and no static users configured")
	}
	for i, s := range cfg.Secrets {
		if s == "" {
			return nil, fmt.Errorf("auth: secret %d is empty", i)
		}
	}
	if cfg.MaxTTL <= 0 {
		return nil, fmt.Errorf("auth: max TTL must be positive, got %s", cfg.MaxTTL)
	}
	static := make(map[string]string, len(cfg.StaticUsers))
	for name, pw := range cfg.StaticUsers {
		static[name] = pw
	}
	return &authState{secrets: append([]string(nil), cfg.Secrets...), static: static,
		maxTTL: cfg.MaxTTL, skew: cfg.ClockSkew}, nil
}

// Update replaces the secrets, static users, MaxTTL and ClockSkew (cfg.Now is ignored: the
// clock stays) at once, for a configuration reload. Every Issue and Lookup sees either the
// old or the new settings, never a mix. A bad cfg returns New's error and changes nothing.
// Allocations keep the long-term key they were created with, so a removed secret does not
// end them (relay).
func (a *Authenticator) Update(cfg Config) error {
	st, err := newState(cfg)
	if err != nil {
		return err
	}
	a.st.Store(st)
	return nil
}

// MaxTTL returns the longest lifetime Issue hands out.
func (a *Authenticator) MaxTTL() time.Duration { return a.st.Load().maxTTL }

// Credential is a TURN REST credential pair.
type Credential struct {
	// Username is "<expiry unix seconds>:<user id>".
	Username string
	// Password is base64(HMAC-SHA1(secret, Username)) with the first configured secret.
	Password string
	// Expires is the expiry encoded in Username, truncated to whole seconds.
	Expires time.Time
	// TTL is the lifetime the credential was issued for.
	TTL time.Duration
}

// Issue mints a REST credential for userID that is valid for ttl (whole seconds, rounded up,
// at most MaxTTL). userID may contain ':' but no control characters, is valid UTF-8 and at most
// MaxUserIDLen bytes. Errors: ErrBadUserID, ErrBadTTL, ErrUnknownUser when no secret exists.
func (a *Authenticator) Issue(userID string, ttl time.Duration) (Credential, error) {
	st := a.st.Load()
	if len(st.secrets) == 0 {
		return Credential{}, fmt.Errorf("%w: no REST secret configured", ErrUnknownUser)
	}
	if err := ValidateUserID(userID); err != nil {
		return Credential{}, err
	}
	if ttl <= 0 || ttl > st.maxTTL {
		return Credential{}, fmt.Errorf("%w: %s is not in (0, %s] (auth.max_ttl)", ErrBadTTL, ttl, st.maxTTL)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	expires := a.now().Unix() + secs
	username := strconv.FormatInt(expires, 10) + ":" + userID
	return Credential{
		Username: username,
		Password: RESTPassword(st.secrets[0], username),
		Expires:  time.Unix(expires, 0).UTC(),
		TTL:      time.Duration(secs) * time.Second,
	}, nil
}

// ValidateUserID returns ErrBadUserID (wrapped with the cause) when id cannot be embedded in
// a TURN username: longer than MaxUserIDLen bytes, not UTF-8, or containing control or
// direction characters (as display names; they could disguise it in the allocation log).
func ValidateUserID(id string) error {
	if len(id) > MaxUserIDLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadUserID, MaxUserIDLen)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("%w: not valid UTF-8", ErrBadUserID)
	}
	for _, r := range id {
		if disguising(r) {
			return fmt.Errorf("%w: contains a control or direction character", ErrBadUserID)
		}
	}
	return nil
}

// Identity is what Lookup learns from a username.
type Identity struct {
	// UserID is the part after the first ':' of a REST username, or the static username.
	UserID string
	// Expires is the REST expiry; zero for static users.
	Expires time.Time
	// Static is true for a static user.
	Static bool
	// Passwords are the candidate passwords, one per configured secret (first secret first)
	// for REST usernames, or the single static password.
	Passwords []string
}

// Lookup checks username against the static users and the REST rules and returns the
// candidate passwords. With ErrExpired the Identity is still filled in, so that a caller can
// honour an allocation created before the expiry (see relay's mid-call policy). Other errors
// (ErrMalformed, ErrTooFarAhead, ErrUnknownUser) return a zero Identity.
func (a *Authenticator) Lookup(username string) (Identity, error) {
	st := a.st.Load()
	if pw, ok := st.static[username]; ok {
		return Identity{UserID: username, Static: true, Passwords: []string{pw}}, nil
	}
	if len(st.secrets) == 0 {
		return Identity{}, ErrUnknownUser
	}
	expiry, userID, err := ParseRESTUsername(username)
	if err != nil {
		return Identity{}, err
	}
	if err := ValidateUserID(userID); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	now := a.now()
	if expiry > now.Add(st.maxTTL+st.skew).Unix() {
		return Identity{}, ErrTooFarAhead
	}
	id := Identity{UserID: userID, Expires: time.Unix(expiry, 0).UTC()}
	id.Passwords = make([]string, len(st.secrets))
	for i, s := range st.secrets {
		id.Passwords[i] = RESTPassword(s, username)
	}
	if expiry <= now.Unix() {
		return id, ErrExpired
	}
	return id, nil
}

// UserID returns the user id a username names, as Lookup would, without computing passwords:
// the username itself for a static user, the part after the first ':' for a REST username,
// "" when it is neither. For callers that already authenticated the request.
func (a *Authenticator) UserID(username string) string {
	st := a.st.Load()
	if _, ok := st.static[username]; ok {
		return username
	}
	if _, userID, err := ParseRESTUsername(username); err == nil && len(st.secrets) > 0 && ValidateUserID(userID) == nil {
		return userID
	}
	return ""
}

// ParseRESTUsername splits "<expiry>:<user id>" at the first ':' (the user id may contain
// more). A bare "<expiry>", as coturn's clients send without a user, has an empty user id.
// The expiry must be canonical decimal Unix seconds: digits only, no sign, no leading zero,
// at most 19 digits and within int64. Returns ErrMalformed otherwise. A far-future expiry
// (such as a millisecond timestamp) parses; Lookup refuses it with ErrTooFarAhead.
func ParseRESTUsername(username string) (expiry int64, userID string, err error) {
	ts, userID, _ := strings.Cut(username, ":")
	if ts == "" || len(ts) > maxExpiryDigits || ts[0] == '0' {
		return 0, "", fmt.Errorf("%w: expiry is not canonical seconds", ErrMalformed)
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return 0, "", fmt.Errorf("%w: expiry is not decimal", ErrMalformed)
		}
	}
	expiry, err = strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return expiry, userID, nil
}

// RESTPassword returns base64(HMAC-SHA1(secret, username)), the TURN REST password
// (draft-uberti-behave-turn-rest-00 §2.2).
func RESTPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// LongTermKey returns MD5(username ":" realm ":" password), the key of the STUN long-term
// credential mechanism (RFC 8489 §9.2.2) used for MESSAGE-INTEGRITY.
func LongTermKey(username, realm, password string) []byte {
	h := md5.New() //nolint:gosec // mandated by RFC 8489 §9.2.2
	h.Write([]byte(username + ":" + realm + ":" + password))
	return h.Sum(nil)
}
