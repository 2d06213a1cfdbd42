package auth

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// A reload rotates the secret on a running Authenticator: the credential of the old secret
// still verifies while the old secret stays listed, the new secret issues, a removed secret
// stops verifying, and a bad update changes nothing.
func TestUpdateRotatesSecretsInPlace(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "old")
	old, _ := a.Issue("u", time.Hour)

	if err := a.Update(Config{Secrets: []string{"new", "old"}, MaxTTL: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	id, err := a.Lookup(old.Username)
	if err != nil || !slices.Contains(id.Passwords, old.Password) {
		t.Fatalf("old credential after rotation: %v %v", err, id.Passwords)
	}
	issued, _ := a.Issue("u", time.Hour)
	if issued.Password != RESTPassword("new", issued.Username) {
		t.Fatal("the new first secret must issue after Update")
	}
	if a.MaxTTL() != 2*time.Hour {
		t.Fatalf("MaxTTL %s after Update", a.MaxTTL())
	}
	if _, err := a.Lookup("legacy"); err == nil {
		t.Fatal("static users not in the update must be gone")
	}

	if err := a.Update(Config{Secrets: []string{""}, MaxTTL: time.Hour}); err == nil {
		t.Fatal("an empty secret must be refused")
	}
	if err := a.Update(Config{MaxTTL: time.Hour}); err == nil {
		t.Fatal("nothing to verify must be refused")
	}
	if id, err := a.Lookup(old.Username); err != nil || !slices.Contains(id.Passwords, old.Password) {
		t.Fatal("a refused update must leave the secrets as they were")
	}

	if err := a.Update(Config{Secrets: []string{"new"}, MaxTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if id, _ := a.Lookup(old.Username); slices.Contains(id.Passwords, old.Password) {
		t.Fatal("a removed secret must no longer verify")
	}
}

// Lookups and issues running while secrets are replaced see one whole set or the other
// (run with -race).
func TestUpdateConcurrentWithLookup(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "a")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := a.Issue("u", time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				id, err := a.Lookup(c.Username)
				if err != nil || len(id.Passwords) == 0 {
					t.Error("lookup during update:", err)
					return
				}
			}
		})
	}
	for i := range 200 {
		secrets := []string{"a"}
		if i%2 == 1 {
			secrets = []string{"b", "a"}
		}
		if err := a.Update(Config{Secrets: secrets, MaxTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// Room signing keys rotate the same way: the new first key signs, the old one verifies
// while listed, and not after.
func TestRoomTokensUpdateKeys(t *testing.T) {
	k1, k2 := "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	rt, err := NewRoomTokens(RoomTokensConfig{Keys: []string{k1}})
	if err != nil {
		t.Fatal(err)
	}
	claims := RoomClaims{Room: NewRoomID(), Role: RoleGuest, Expires: time.Now().Add(time.Hour)}
	old, err := rt.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.UpdateKeys([]string{"short"}); err == nil {
		t.Fatal("a short key must be refused")
	}
	if _, err := rt.Verify(old); err != nil {
		t.Fatalf("a refused update changed the keys: %v", err)
	}
	if err := rt.UpdateKeys([]string{k2, k1}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Verify(old); err != nil {
		t.Fatalf("the old key is still listed: %v", err)
	}
	fresh, _ := rt.Mint(claims)
	only2, _ := NewRoomTokens(RoomTokensConfig{Keys: []string{k2}})
	if _, err := only2.Verify(fresh); err != nil {
		t.Fatal("the new first key must sign")
	}
	if err := rt.UpdateKeys([]string{k2}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Verify(old); err == nil {
		t.Fatal("a removed key must no longer verify")
	}
}
