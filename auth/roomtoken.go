package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Room roles (the "role" claim). The host admits guests; the page derives perfect-negotiation
// politeness from it: the host is impolite, a guest polite.
const (
	RoleHost  = "host"
	RoleGuest = "guest"
)

// Sentinel errors of VerifyRoomToken; callers map them to WebSocket close codes.
var (
	// ErrTokenInvalid: not a JWT, not HS256, a signature no configured key made, or claims
	// that break the rules of RoomClaims (no room, unknown role, no exp, a bad name).
	ErrTokenInvalid = errors.New("auth: invalid room token")
	// ErrTokenExpired: exp is not after now.
	ErrTokenExpired = errors.New("auth: room token expired")
	// ErrTokenNotYetValid: nbf lies more than the leeway ahead of now.
	ErrTokenNotYetValid = errors.New("auth: room token not yet valid")
)

// Limits of room token claims.
const (
	// MinRoomIDLen and MaxRoomIDLen bound a room id: 22 characters are 128 random bits in
	// base64url; clinics minting their own may use a UUID.
	MinRoomIDLen = 22
	MaxRoomIDLen = 64
	// MaxNameRunes bounds a display name, in characters.
	MaxNameRunes = 64
	// MaxJTILen bounds the one-visit id, in bytes.
	MaxJTILen = 128
	// MinRoomKeyLen is the shortest signing key accepted, in bytes (HS256 wants 256 bits).
	MinRoomKeyLen = 32
	// DefaultRoomLeeway tolerates an issuer whose clock runs ahead, for nbf only: exp is exact.
	DefaultRoomLeeway = 30 * time.Second
)

// RoomClaims are what a room token says: who may join which room, as what, and when.
// Encoded as JWT claims room, role, name, maxGuests, nbf, exp and jti.
type RoomClaims struct {
	// Room is the room id: MinRoomIDLen-MaxRoomIDLen characters of [A-Za-z0-9_-].
	Room string
	// Role is RoleHost or RoleGuest.
	Role string
	// Name is an optional display name: at most MaxNameRunes characters, no control or
	// bidirectional-override characters. Shown to others as text, never interpreted.
	Name string
	// MaxGuests, when positive, is how many guests may be admitted at once (capped by the
	// server's rooms.limits.max_guests).
	MaxGuests int
	// NotBefore (nbf) is when the room opens; zero means now.
	NotBefore time.Time
	// Expires (exp) is when the room ends (its validUntil). Required.
	Expires time.Time
	// OneVisit (jti), when set, makes the link good for one visit: a second join with it is
	// refused once the first participant has left.
	OneVisit string
}

type roomJWT struct {
	Room      string `json:"room"`
	Role      string `json:"role"`
	Name      string `json:"name,omitempty"`
	MaxGuests int    `json:"maxGuests,omitempty"`
	jwt.RegisteredClaims
}

// RoomTokensConfig configures RoomTokens.
type RoomTokensConfig struct {
	// Keys are the HS256 signing keys: the first signs, every one verifies, so a key can be
	// rotated without breaking links. At least one, each at least MinRoomKeyLen bytes.
	Keys []string
	// Leeway tolerates an issuer's clock ahead of ours for nbf; zero means DefaultRoomLeeway.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// RoomTokens mints and verifies room tokens (JWT, HS256, RFC 7519). Safe for concurrent use,
// also with UpdateKeys.
type RoomTokens struct {
	keys   atomic.Pointer[[][]byte] // never changed once stored
	leeway time.Duration
	now    func() time.Time
}

// NewRoomTokens returns RoomTokens for cfg, or an error naming the bad key.
func NewRoomTokens(cfg RoomTokensConfig) (*RoomTokens, error) {
	t := &RoomTokens{leeway: cfg.Leeway, now: cfg.Now}
	if err := t.UpdateKeys(cfg.Keys); err != nil {
		return nil, err
	}
	if t.leeway == 0 {
		t.leeway = DefaultRoomLeeway
	}
	if t.now == nil {
		t.now = time.Now
	}
	return t, nil
}

// UpdateKeys replaces the signing keys at once (a configuration reload): the first signs,
// every one verifies. Links signed with a key that is no longer listed are refused from then
// on; rooms already joined are not affected. Bad keys return the error of NewRoomTokens
// and change nothing.
func (t *RoomTokens) UpdateKeys(keys []string) error {
	if len(keys) == 0 {
		return errors.New("auth: no room signing key")
	}
	parsed := make([][]byte, 0, len(keys))
	for i, k := range keys {
		if len(k) < MinRoomKeyLen {
			return fmt.Errorf("auth: room signing key %d is shorter than %d bytes", i, MinRoomKeyLen)
		}
		parsed = append(parsed, []byte(k))
	}
	t.keys.Store(&parsed)
	return nil
}

// Mint signs c with the first key. Errors: ErrTokenInvalid (wrapped with the cause) when c
// breaks a rule of RoomClaims.
func (t *RoomTokens) Mint(c RoomClaims) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	claims := roomJWT{Room: c.Room, Role: c.Role, Name: c.Name, MaxGuests: c.MaxGuests,
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(c.Expires),
			IssuedAt: jwt.NewNumericDate(t.now()), ID: c.OneVisit}}
	if !c.NotBefore.IsZero() {
		claims.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString((*t.keys.Load())[0])
	if err != nil {
		return "", fmt.Errorf("auth: sign room token: %w", err)
	}
	return s, nil
}

// Verify checks the token's signature against every key, then exp (exact) and nbf (with the
// leeway). Errors: ErrTokenInvalid, ErrTokenExpired, ErrTokenNotYetValid. For the latter
// two the claims are returned too, so that a caller can say when the room opens.
func (t *RoomTokens) Verify(token string) (RoomClaims, error) {
	var claims roomJWT
	keys := jwt.VerificationKeySet{}
	for _, k := range *t.keys.Load() {
		keys.Keys = append(keys.Keys, k)
	}
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return keys, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding())
	if err != nil {
		return RoomClaims{}, fmt.Errorf("%w: %v", ErrTokenInvalid, shortJWTError(err))
	}
	c := RoomClaims{Room: claims.Room, Role: claims.Role, Name: claims.Name, MaxGuests: claims.MaxGuests,
		OneVisit: claims.ID}
	if claims.ExpiresAt != nil {
		c.Expires = claims.ExpiresAt.Time
	}
	if claims.NotBefore != nil {
		c.NotBefore = claims.NotBefore.Time
	}
	if err := c.check(); err != nil {
		return RoomClaims{}, err
	}
	now := t.now()
	if !c.Expires.After(now) {
		return c, ErrTokenExpired
	}
	if c.NotBefore.After(now.Add(t.leeway)) {
		return c, ErrTokenNotYetValid
	}
	return c, nil
}

// shortJWTError names the failure without echoing the token.
func shortJWTError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature"
	}
	return "rejected"
}

func (c RoomClaims) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrTokenInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case !ValidRoomID(c.Room):
		return bad("room must be %d-%d characters of A-Z a-z 0-9 _ -", MinRoomIDLen, MaxRoomIDLen)
	case c.Role != RoleHost && c.Role != RoleGuest:
		return bad("role must be %q or %q", RoleHost, RoleGuest)
	case c.Expires.IsZero():
		return bad("exp is required")
	case !c.NotBefore.IsZero() && !c.NotBefore.Before(c.Expires):
		return bad("nbf must be before exp")
	case c.MaxGuests < 0:
		return bad("maxGuests cannot be negative")
	case len(c.OneVisit) > MaxJTILen:
		return bad("jti longer than %d bytes", MaxJTILen)
	}
	if err := ValidateDisplayName(c.Name); err != nil {
		return bad("name: %v", err)
	}
	return nil
}

// ValidRoomID reports whether id is MinRoomIDLen-MaxRoomIDLen characters of [A-Za-z0-9_-].
func ValidRoomID(id string) bool {
	if len(id) < MinRoomIDLen || len(id) > MaxRoomIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// ValidateDisplayName returns an error when name is not valid UTF-8, longer than
// MaxNameRunes characters, or holds control or bidirectional-override characters (which
// could disguise it). "" is valid (no name).
func ValidateDisplayName(name string) error {
	if !utf8.ValidString(name) {
		return errors.New("not valid UTF-8")
	}
	if utf8.RuneCountInString(name) > MaxNameRunes {
		return fmt.Errorf("longer than %d characters", MaxNameRunes)
	}
	for _, r := range name {
		if disguising(r) {
			return errors.New("contains a control or direction character")
		}
	}
	if strings.TrimSpace(name) != name {
		return errors.New("has leading or trailing space")
	}
	return nil
}

// disguising reports control characters and the bidirectional marks, embeddings, overrides
// and isolates (U+200E-200F, U+202A-202E, U+2066-2069), which could make a text read as
// another in a log or on a page.
func disguising(r rune) bool {
	return unicode.IsControl(r) || r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 || r == 0x200E || r == 0x200F
}

// NewRoomID returns a fresh room id: 128 random bits, base64url (22 characters). It carries
// no personal data.
func NewRoomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
