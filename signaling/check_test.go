package signaling

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling/web"
)

// withCheck turns on the check page (without rooms) with tokens on the fixture's clock.
func withCheck(f **fixture, tokens **auth.RoomTokens) func(*Config) {
	return func(c *Config) {
		rt, err := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: []string{roomKey}, Now: c.Now})
		if err != nil {
			panic(err)
		}
		p, err := web.New(web.Config{})
		if err != nil {
			panic(err)
		}
		*tokens = rt
		c.Check = &CheckConfig{Tokens: rt, Page: p, PublicURL: "https://turn.clinic.example/"}
	}
}

// A check link opens the check page (and its assets) without rooms, and its token, and only
// its token, gets short-lived TURN credentials for every ICE server URL; an expired link,
// a room token or none gets 401, without echoing anything back.
func TestCheckICEServers(t *testing.T) {
	var f *fixture
	var tokens *auth.RoomTokens
	f = newFixture(t, withCheck(&f, &tokens))
	link, err := NewCheckLink(tokens, "https://turn.clinic.example/", 0, f.now)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := strings.CutPrefix(link.URL, "https://turn.clinic.example/check#t=")
	if !ok || !link.ExpiresAt.Equal(f.now.Add(DefaultCheckLinkTTL)) {
		t.Fatalf("link %+v", link)
	}
	for _, path := range []string{"/check", "/assets/check.js", "/assets/conntest.js"} {
		if rec := f.do(t, "GET", path, "", "Authorization", ""); rec.Code != http.StatusOK || rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: %d", path, rec.Code)
		}
	}
	rec := f.do(t, "GET", "/v1/check/ice-servers", "", "Authorization", "Bearer "+tok)
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("ice servers: %d %s", rec.Code, rec.Body)
	}
	conf := decode[RTCConfiguration](t, rec)
	if len(conf.ICEServers) != 2 || len(conf.ICEServers[1].URLs) != 3 || conf.TTL != int64(CheckCredentialTTL/time.Second) {
		t.Fatalf("ice servers: %s", rec.Body)
	}
	f.verify(t, conf.ICEServers[1].Username, conf.ICEServers[1].Credential, "")

	room, err := tokens.Mint(auth.RoomClaims{Room: auth.NewRoomID(), Role: auth.RoleHost, Expires: f.now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		auth, code string
	}{
		"no token":   {"", "unauthorized"},
		"room token": {"Bearer " + room, "token_invalid"},
		"API key":    {"Bearer " + f.key, "token_invalid"},
	} {
		rec := f.do(t, "GET", "/v1/check/ice-servers", "", "Authorization", c.auth)
		if rec.Code != http.StatusUnauthorized || decode[apiError](t, rec).Error.Code != c.code {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	f.now = f.now.Add(DefaultCheckLinkTTL)
	if rec := f.do(t, "GET", "/v1/check/ice-servers", "", "Authorization", "Bearer "+tok); rec.Code != http.StatusUnauthorized ||
		decode[apiError](t, rec).Error.Code != "token_expired" {
		t.Errorf("expired: %d %s", rec.Code, rec.Body)
	}
}

// An app mints check links with its API key: POST /v1/check-links, ttl in seconds.
func TestCreateCheckLink(t *testing.T) {
	var f *fixture
	var tokens *auth.RoomTokens
	f = newFixture(t, withCheck(&f, &tokens))
	rec := f.do(t, "POST", "/v1/check-links", `{"ttl": 3600}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	link := decode[CheckLink](t, rec)
	tok, _ := strings.CutPrefix(link.URL, "https://turn.clinic.example/check#t=")
	if exp, err := tokens.VerifyCheck(tok); err != nil || !exp.Equal(f.now.Add(time.Hour)) || !link.ExpiresAt.Equal(exp) {
		t.Fatalf("minted %+v: %v %v", link, exp, err)
	}
	for _, c := range []struct {
		method, body string
		hdr          []string
		code         int
	}{
		{"POST", `{"ttl": 3600}`, []string{"Authorization", ""}, http.StatusUnauthorized},
		{"GET", "", nil, http.StatusMethodNotAllowed},
		{"POST", `{"ttl": 10}`, nil, http.StatusBadRequest},
		{"POST", `{"ttl": 99999999}`, nil, http.StatusBadRequest},
		{"POST", `{"room": "x"}`, nil, http.StatusBadRequest},
	} {
		if rec := f.do(t, c.method, "/v1/check-links", c.body, c.hdr...); rec.Code != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.body, rec.Code, rec.Body, c.code)
		}
	}
	if rec := f.do(t, "POST", "/v1/check-links", ""); rec.Code != http.StatusCreated ||
		!decode[CheckLink](t, rec).ExpiresAt.Equal(f.now.Add(DefaultCheckLinkTTL)) {
		t.Errorf("default ttl: %d %s", rec.Code, rec.Body)
	}
}
