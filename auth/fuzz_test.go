package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzRESTUsername feeds arbitrary USERNAME values (as a TURN client sends them, unchecked)
// to ParseRESTUsername, Lookup and UserID. Nothing panics; a parsed username is exactly
// "<canonical expiry>[:<user id>]" and prints back to itself; Lookup fails only with its
// sentinels (whose Reason is a bounded label) and agrees with UserID; and a user id that
// Issue accepts comes back from Lookup of the username Issue made. Seeds:
// testdata/fuzz/FuzzRESTUsername.
func FuzzRESTUsername(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	a, err := New(Config{Secrets: []string{"fuzz-secret-0123456789", "older-secret-0123456789"}, MaxTTL: 24 * time.Hour,
		ClockSkew: 5 * time.Minute, StaticUsers: map[string]string{"legacy": "pw"}, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	reasons := map[string]bool{ReasonMalformed: true, ReasonExpired: true, ReasonTooFarAhead: true, ReasonUnknownUser: true}
	f.Fuzz(func(t *testing.T, username string) {
		expiry, userID, err := ParseRESTUsername(username)
		if err == nil {
			back := strconv.FormatInt(expiry, 10)
			if strings.Contains(username, ":") {
				back += ":" + userID
			}
			if back != username || expiry <= 0 {
				t.Fatalf("%q parsed as %d and %q", username, expiry, userID)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("%q: %v is not ErrMalformed", username, err)
		}
		id, err := a.Lookup(username)
		switch {
		case err == nil || errors.Is(err, ErrExpired):
			if len(id.Passwords) == 0 || id.UserID != a.UserID(username) {
				t.Fatalf("%q: identity %+v, UserID %q", username, id, a.UserID(username))
			}
		case !reasons[Reason(err)]:
			t.Fatalf("%q: %v has no bounded reason (%q)", username, err, Reason(err))
		}
		if ValidateUserID(username) == nil {
			c, err := a.Issue(username, time.Hour)
			if err != nil {
				t.Fatalf("Issue(%q): %v", username, err)
			}
			got, err := a.Lookup(c.Username)
			if err != nil || got.UserID != username || got.Passwords[0] != c.Password {
				t.Fatalf("Issue(%q) made %q, which looks up as %+v, %v", username, c.Username, got, err)
			}
		}
	})
}

// FuzzRoomToken feeds arbitrary tokens to Verify, and arbitrary claim sets signed with the
// right key (so the claim rules, not the signature, decide). Nothing panics; failures are
// the sentinels and never echo the token; an accepted token's claims follow every rule of
// RoomClaims and survive Mint and Verify unchanged. Seeds: testdata/fuzz/FuzzRoomToken.
func FuzzRoomToken(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key := strings.Repeat("k", MinRoomKeyLen)
	rt, err := NewRoomTokens(RoomTokensConfig{Keys: []string{key}, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	check := func(t *testing.T, token string) {
		c, err := rt.Verify(token)
		switch {
		case err == nil:
			if c.check() != nil {
				t.Fatalf("accepted claims that break the rules: %+v", c)
			}
			again, err := rt.Mint(c)
			if err != nil {
				t.Fatalf("accepted %+v but cannot mint it: %v", c, err)
			}
			if back, err := rt.Verify(again); err != nil || back != c {
				t.Fatalf("claims %+v came back as %+v, %v", c, back, err)
			}
		case !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenExpired) && !errors.Is(err, ErrTokenNotYetValid):
			t.Fatalf("%v is no sentinel", err)
		case len(token) > 16 && strings.Contains(err.Error(), token):
			t.Fatalf("the error echoes the token: %v", err)
		}
	}
	f.Fuzz(func(t *testing.T, token string, claims []byte) {
		check(t, token)
		signing := header + "." + base64.RawURLEncoding.EncodeToString(claims)
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte(signing))
		check(t, signing+"."+base64.RawURLEncoding.EncodeToString(mac.Sum(nil)))
	})
}
