package auth

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func newTestAuth(t *testing.T, now *time.Time, secrets ...string) *Authenticator {
	t.Helper()
	a, err := New(Config{
		Secrets:     secrets,
		StaticUsers: map[string]string{"legacy": "pw"},
		MaxTTL:      24 * time.Hour,
		ClockSkew:   5 * time.Minute,
		Now:         func() time.Time { return *now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The password must be exactly what other TURN REST implementations compute, or web apps
// minting credentials with their own code get 401s.
func TestRESTPasswordMatchesDraftDefinition(t *testing.T) {
	mac := hmac.New(sha1.New, []byte("test-secret"))
	mac.Write([]byte("1700000000:u-0001"))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if got := RESTPassword("test-secret", "1700000000:u-0001"); got != want {
		t.Fatalf("RESTPassword = %q, want %q", got, want)
	}
}

func TestIssueThenLookup(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "s1")
	c, err := a.Issue("dr:smith", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.FormatInt(t0.Unix()+3600, 10) + ":dr:smith"; c.Username != want {
		t.Fatalf("username %q, want %q", c.Username, want)
	}
	if c.Password != RESTPassword("s1", c.Username) {
		t.Fatal("password not minted from the first secret")
	}
	id, err := a.Lookup(c.Username)
	if err != nil {
		t.Fatal(err)
	}
	if id.UserID != "dr:smith" || id.Passwords[0] != c.Password || !id.Expires.Equal(c.Expires) {
		t.Fatalf("lookup = %+v", id)
	}
}

// C13: accept only a canonical decimal seconds value with now < expiry ≤ now + max_ttl;
// everything else is rejected, counted by reason.
func TestC13TimestampForms(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "test-secret")
	n := t0.Unix()
	cases := []struct {
		username string
		want     error
	}{
		{"1893456000000:u-0001", ErrTooFarAhead},              // milliseconds: 13 digits
		{"1893456000000000:u-0001", ErrTooFarAhead},           // microseconds
		{"1893456000000000000:u-0001", ErrTooFarAhead},        // nanoseconds: 19 digits
		{"9223372036854775807:u-0001", ErrTooFarAhead},        // the largest int64
		{"9223372036854775808:u-0001", ErrMalformed},          // beyond int64
		{"18934560000000000000:u-0001", ErrMalformed},         // 20 digits
		{"99999999999:u-0001", ErrTooFarAhead},                // seconds, year 5138
		{strconv.FormatInt(n+86400, 10) + ":u-0001", nil},     // valid at the 24 h cap
		{strconv.FormatInt(n+86400+299, 10) + ":u-0001", nil}, // within the clock skew
		{strconv.FormatInt(n+86400+301, 10) + ":u-0001", ErrTooFarAhead},
		{strconv.FormatInt(n-1, 10) + ":u-0001", ErrExpired},
		{strconv.FormatInt(n, 10) + ":u-0001", ErrExpired}, // expiry must be after now
		{"+" + strconv.FormatInt(n+60, 10) + ":u-0001", ErrMalformed},
		{" " + strconv.FormatInt(n+60, 10) + ":u-0001", ErrMalformed},
		{"0x70000000:u-0001", ErrMalformed},
		{"0" + strconv.FormatInt(n+60, 10) + ":u-0001", ErrMalformed}, // leading zero
		{strconv.FormatInt(n+60, 10), nil},                            // no user part (coturn clients)
		{"-5:u", ErrMalformed},
		{":u", ErrMalformed},
		{"", ErrMalformed},
		{strconv.FormatInt(n+60, 10) + ".5:u", ErrMalformed},
		{strconv.FormatInt(n+60, 10) + ":a\x00b", ErrMalformed}, // a user id Issue would refuse
		{strconv.FormatInt(n+60, 10) + ":a\nb", ErrMalformed},
	}
	for _, c := range cases {
		_, err := a.Lookup(c.username)
		if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("Lookup(%q) = %v, want %v", c.username, err, c.want)
		}
	}
	// The metric label operators see: a millisecond timestamp (Date.now() in JavaScript
	// where seconds belong) is "too_far_ahead", as the README says, not "malformed".
	if _, err := a.Lookup(strconv.FormatInt(t0.UnixMilli()+3600_000, 10) + ":u-0001"); Reason(err) != ReasonTooFarAhead {
		t.Errorf("a millisecond expiry is counted as %q", Reason(err))
	}
}

// C14: split at the first colon only; the HMAC covers the whole username.
func TestC14UserIDsWithColons(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "test-secret")
	for _, uid := range []string{"a:b", "a:b:c", "a@b", "a%3Ab", "", "org:ward:room"} {
		c, err := a.Issue(uid, time.Minute)
		if err != nil {
			t.Fatalf("Issue(%q): %v", uid, err)
		}
		id, err := a.Lookup(c.Username)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", c.Username, err)
		}
		if id.UserID != uid {
			t.Errorf("user id of %q = %q, want %q", c.Username, id.UserID, uid)
		}
		if id.Passwords[0] != RESTPassword("test-secret", c.Username) {
			t.Errorf("HMAC of %q does not cover the full username", c.Username)
		}
	}
	for _, bad := range []string{strings.Repeat("x", 300), "a\x00b", "a\nb", "\xff"} {
		if _, err := a.Issue(bad, time.Minute); !errors.Is(err, ErrBadUserID) {
			t.Errorf("Issue(%q) = %v, want ErrBadUserID", bad, err)
		}
	}
	// The longest accepted id keeps USERNAME under RFC 8489's 509 bytes.
	c, err := a.Issue(strings.Repeat("x", MaxUserIDLen), time.Minute)
	if err != nil || len(c.Username) >= 509 {
		t.Fatalf("max-length id: %v, len %d", err, len(c.Username))
	}
}

func TestRotatedSecretsAllVerifyFirstIssues(t *testing.T) {
	now := t0
	old := newTestAuth(t, &now, "old")
	rotated := newTestAuth(t, &now, "new", "old")
	gone := newTestAuth(t, &now, "new")

	c, _ := old.Issue("u", time.Hour)
	id, err := rotated.Lookup(c.Username)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Passwords) != 2 || id.Passwords[1] != c.Password {
		t.Fatal("a credential from the previous, still-listed secret must have a matching candidate")
	}
	id, _ = gone.Lookup(c.Username)
	for _, pw := range id.Passwords {
		if pw == c.Password {
			t.Fatal("a credential from a secret that is no longer listed must not verify")
		}
	}
	issued, _ := rotated.Issue("u", time.Hour)
	if issued.Password != RESTPassword("new", issued.Username) {
		t.Fatal("the first secret must issue")
	}
}

func TestExpiredLookupStillIdentifies(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "s")
	c, _ := a.Issue("u-1", time.Minute)
	now = now.Add(90 * time.Second)
	id, err := a.Lookup(c.Username)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
	if id.UserID != "u-1" || id.Passwords[0] != c.Password {
		t.Fatalf("expired lookup must still identify the user: %+v", id)
	}
}

func TestStaticUsersAndUnknown(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "s")
	id, err := a.Lookup("legacy")
	if err != nil || !id.Static || id.Passwords[0] != "pw" {
		t.Fatalf("static lookup = %+v, %v", id, err)
	}
	staticOnly, err := New(Config{StaticUsers: map[string]string{"x": "y"}, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := staticOnly.Lookup("1893456000:u"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("REST username without secrets = %v, want ErrUnknownUser", err)
	}
	if _, err := staticOnly.Issue("u", time.Minute); err == nil {
		t.Fatal("Issue without a secret must fail")
	}
}

func TestIssueTTLBounds(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "s")
	for _, ttl := range []time.Duration{0, -time.Second, 25 * time.Hour} {
		if _, err := a.Issue("u", ttl); !errors.Is(err, ErrBadTTL) {
			t.Errorf("Issue ttl %s = %v, want ErrBadTTL", ttl, err)
		}
	}
	c, err := a.Issue("u", 1500*time.Millisecond)
	if err != nil || c.TTL != 2*time.Second || c.Expires.Unix() != t0.Unix()+2 {
		t.Fatalf("sub-second TTL must round up to whole seconds: %+v %v", c, err)
	}
}

func TestNewRejectsUselessConfig(t *testing.T) {
	if _, err := New(Config{MaxTTL: time.Hour}); err == nil {
		t.Error("no secrets and no users must fail")
	}
	if _, err := New(Config{Secrets: []string{""}, MaxTTL: time.Hour}); err == nil {
		t.Error("an empty secret must fail")
	}
	if _, err := New(Config{Secrets: []string{"s"}}); err == nil {
		t.Error("zero max TTL must fail")
	}
}

func TestReasonLabels(t *testing.T) {
	for err, want := range map[error]string{
		ErrExpired: ReasonExpired, ErrTooFarAhead: ReasonTooFarAhead,
		ErrMalformed: ReasonMalformed, ErrUnknownUser: ReasonUnknownUser, nil: "",
	} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

// UserID names the same user as Lookup (quotas and the allocation log count by it) without
// the HMAC work.
func TestUserIDMatchesLookup(t *testing.T) {
	now := t0
	a := newTestAuth(t, &now, "s1")
	c, _ := a.Issue("dr:smith", time.Hour)
	expired := strconv.FormatInt(t0.Unix()-10, 10) + ":late"
	for _, u := range []string{c.Username, "legacy", expired, strconv.FormatInt(t0.Unix()+60, 10)} {
		id, _ := a.Lookup(u)
		if got := a.UserID(u); got != id.UserID {
			t.Errorf("%q: UserID %q, Lookup %q", u, got, id.UserID)
		}
	}
	for _, u := range []string{"nobody", "012:x", ""} {
		if got := a.UserID(u); got != "" {
			t.Errorf("%q: UserID %q, want none", u, got)
		}
	}
}

// A user id goes into the TURN username and the allocation log: no control or direction
// characters (a right-to-left override would make it read as another), as for display names.
func TestValidateUserID(t *testing.T) {
	for _, bad := range []string{"a\x00b", "consult\n4711", "pat\u202Eient", "x\u2066y", "\u200Fz", string([]byte{0xff})} {
		if err := ValidateUserID(bad); !errors.Is(err, ErrBadUserID) {
			t.Errorf("%q: %v, want ErrBadUserID", bad, err)
		}
	}
	for _, ok := range []string{"consult-4711", "Müller", "patient:with:colons", "診察"} {
		if err := ValidateUserID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}
