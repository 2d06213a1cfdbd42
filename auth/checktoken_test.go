package auth

import (
	"errors"
	"testing"
	"time"
)

// A check link's token verifies until it expires, with any signing key still configured;
// it is no room token, and a room token is no check token.
func TestCheckToken(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	old := roomTokens(t, &now, roomKeyOld)
	tok, err := old.MintCheck(now.Add(24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rotated := roomTokens(t, &now, roomKeyNew, roomKeyOld)
	if exp, err := rotated.VerifyCheck(tok); err != nil || !exp.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("after rotation: %v %v", exp, err)
	}
	if _, err := old.Verify(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("a check token verified as a room token: %v", err)
	}
	room, err := old.Mint(RoomClaims{Room: NewRoomID(), Role: RoleGuest, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.VerifyCheck(room); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("a room token verified as a check token: %v", err)
	}
	if _, err := roomTokens(t, &now, roomKeyNew).VerifyCheck(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("another key's token: %v", err)
	}
	if _, err := old.VerifyCheck("not.a.jwt"); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("garbage: %v", err)
	}
	now = now.Add(24 * time.Hour)
	if _, err := old.VerifyCheck(tok); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("at its expiry: %v", err)
	}
	if _, err := old.MintCheck(now); err == nil {
		t.Error("minted a token that expires now")
	}
}
