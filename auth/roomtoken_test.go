package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	roomKeyOld = "old-room-signing-key-0123456789abcdef"
	roomKeyNew = "new-room-signing-key-0123456789abcdef"
)

func roomTokens(t *testing.T, now *time.Time, keys ...string) *RoomTokens {
	t.Helper()
	rt, err := NewRoomTokens(RoomTokensConfig{Keys: keys, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestRoomTokenRoundTripAndRotation(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	old := roomTokens(t, &now, roomKeyOld)
	room := NewRoomID()
	if len(room) != 22 || !ValidRoomID(room) {
		t.Fatalf("room id %q", room)
	}
	c := RoomClaims{Room: room, Role: RoleGuest, Name: "Frau Müller", MaxGuests: 2,
		NotBefore: now.Add(-time.Minute), Expires: now.Add(time.Hour), OneVisit: "interp-1"}
	tok, err := old.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	// Rotation: the new key is listed first and signs; the old key still verifies.
	rotated := roomTokens(t, &now, roomKeyNew, roomKeyOld)
	got, err := rotated.Verify(tok)
	if err != nil {
		t.Fatalf("a link signed with the old key must still work after rotation: %v", err)
	}
	if got.Room != room || got.Role != RoleGuest || got.Name != "Frau Müller" || got.MaxGuests != 2 ||
		got.OneVisit != "interp-1" || !got.Expires.Equal(c.Expires) || !got.NotBefore.Equal(c.NotBefore) {
		t.Fatalf("claims changed on the way: %+v", got)
	}
	fresh, err := rotated.Mint(RoomClaims{Room: room, Role: RoleHost, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := roomTokens(t, &now, roomKeyNew).Verify(fresh); err != nil {
		t.Fatalf("the first key must sign: %v", err)
	}
	if _, err := old.Verify(fresh); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("a server without the new key must refuse: %v", err)
	}
	// Once the old key is dropped, its links stop working.
	if _, err := roomTokens(t, &now, roomKeyNew).Verify(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("dropped key still verifies: %v", err)
	}
}

func TestRoomTokenTimes(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	rt := roomTokens(t, &now, roomKeyNew)
	room := NewRoomID()
	tok, err := rt.Mint(RoomClaims{Room: room, Role: RoleHost, NotBefore: now.Add(time.Hour), Expires: now.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := rt.Verify(tok)
	if !errors.Is(err, ErrTokenNotYetValid) || !c.NotBefore.Equal(now.Add(time.Hour)) {
		t.Fatalf("nbf in the future: %v %+v", err, c)
	}
	now = now.Add(time.Hour - DefaultRoomLeeway)
	if _, err := rt.Verify(tok); err != nil {
		t.Fatalf("within the leeway before nbf: %v", err)
	}
	now = now.Add(time.Hour + DefaultRoomLeeway - time.Second)
	if _, err := rt.Verify(tok); err != nil {
		t.Fatalf("a second before exp: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := rt.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at exp: %v", err)
	}
}

// What a clinic's backend does with its own JWT library: the README's example claims.
func TestRoomTokenMintedElsewhere(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	rt := roomTokens(t, &now, roomKeyNew)
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	room := "c0nsult-2026-11-29-4711-abcdef"
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"room": room, "role": "guest", "name": "Patient", "exp": now.Add(time.Hour).Unix(),
			"nbf": now.Add(-time.Minute).Unix()}
	}
	if c, err := rt.Verify(sign(jwt.SigningMethodHS256, []byte(roomKeyNew), base())); err != nil || c.Room != room {
		t.Fatalf("clinic-minted token: %v", err)
	}
	bad := map[string]string{
		"other algorithm": sign(jwt.SigningMethodHS512, []byte(roomKeyNew), base()),
		"alg none":        sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, base()),
		"wrong key":       sign(jwt.SigningMethodHS256, []byte("another-key-0123456789abcdefghijkl"), base()),
		"garbage":         "not.a.jwt",
		"empty":           "",
	}
	for name, claims := range map[string]func(jwt.MapClaims){
		"no exp":       func(m jwt.MapClaims) { delete(m, "exp") },
		"no room":      func(m jwt.MapClaims) { delete(m, "room") },
		"short room":   func(m jwt.MapClaims) { m["room"] = "abc" },
		"slash room":   func(m jwt.MapClaims) { m["room"] = strings.Repeat("a", 22) + "/x" },
		"admin role":   func(m jwt.MapClaims) { m["role"] = "admin" },
		"long name":    func(m jwt.MapClaims) { m["name"] = strings.Repeat("n", MaxNameRunes+1) },
		"control name": func(m jwt.MapClaims) { m["name"] = "a\nb" },
		"bidi name":    func(m jwt.MapClaims) { m["name"] = "abc\u202Egpj.exe" },
		"string exp":   func(m jwt.MapClaims) { m["exp"] = "tomorrow" },
	} {
		m := base()
		claims(m)
		bad[name] = sign(jwt.SigningMethodHS256, []byte(roomKeyNew), m)
	}
	for name, tok := range bad {
		if _, err := rt.Verify(tok); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: got %v, want ErrTokenInvalid", name, err)
		}
		if _, err := rt.Verify(tok); err != nil && strings.Contains(err.Error(), tok) && tok != "" {
			t.Errorf("%s: the error echoes the token", name)
		}
	}
}

func TestRoomTokensConfig(t *testing.T) {
	if _, err := NewRoomTokens(RoomTokensConfig{}); err == nil {
		t.Fatal("no key must be refused")
	}
	if _, err := NewRoomTokens(RoomTokensConfig{Keys: []string{"short"}}); err == nil {
		t.Fatal("a short key must be refused")
	}
	now := time.Now()
	rt := roomTokens(t, &now, roomKeyNew)
	if _, err := rt.Mint(RoomClaims{Room: NewRoomID(), Role: RoleHost}); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("mint without exp: %v", err)
	}
}

// A token has one spelling: base64url leaves bits unused in a signature's last character, and
// a loose decoder accepts every respelling of them as the same token, which would let a
// denied link (keyed by its text) come back as a "new" one. Room and check tokens alike.
func TestTokensHaveOneSpelling(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	tokens := roomTokens(t, &now, roomKeyOld)
	room, err := tokens.Mint(RoomClaims{Room: NewRoomID(), Role: RoleGuest, NotBefore: now.Add(-time.Minute), Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	check, err := tokens.MintCheck(now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	respell := func(tok string) []string {
		i := strings.IndexByte(alphabet, tok[len(tok)-1])
		var out []string
		for j := i &^ 3; j < i&^3+4; j++ {
			if j != i {
				out = append(out, tok[:len(tok)-1]+string(alphabet[j]))
			}
		}
		return out
	}
	for _, tok := range respell(room) {
		if _, err := tokens.Verify(tok); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("a respelled room token was accepted (%v)", err)
		}
	}
	for _, tok := range respell(check) {
		if _, err := tokens.VerifyCheck(tok); err == nil {
			t.Errorf("a respelled check token was accepted")
		}
	}
}
