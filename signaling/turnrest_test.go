package signaling

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ferryrelay/ferry/auth"
)

// An app written against the TURN REST draft (draft-uberti-behave-turn-rest-00 §2.1) sends
// service, username, ttl and the API key as query parameters, and gets the draft's JSON
// (§2.2): exactly username, password, ttl and uris, with a credential the relay accepts.
func TestDraftRequestForm(t *testing.T) {
	f := newFixture(t)
	q := url.Values{"service": {"turn"}, "username": {"mbzrxpgjys"}, "ttl": {"86400"}, "key": {f.key}}
	rec := f.do(t, "GET", "/v1/ice-servers?"+q.Encode(), "", "Authorization", "")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d %v: %s", rec.Code, rec.Header(), rec.Body)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if strings.Join(keys, ",") != "password,ttl,uris,username" {
		t.Fatalf("the draft's answer has username, password, ttl and uris only, got %s", rec.Body)
	}
	r := decode[restResponse](t, rec)
	wantUser := strconv.FormatInt(f.now.Unix()+86400, 10) + ":mbzrxpgjys"
	if r.Username != wantUser || r.Password != auth.RESTPassword(testSecret, wantUser) || r.TTL != 86400 {
		t.Fatalf("credential: %+v, want username %s", r, wantUser)
	}
	wantURIs := []string{"turn:turn.clinic.example:3478?transport=udp", "turn:turn.clinic.example:3478?transport=tcp",
		"turns:turn.clinic.example:443?transport=tcp"}
	if !slices.Equal(r.URIs, wantURIs) {
		t.Fatalf("uris %q, want %q", r.URIs, wantURIs)
	}
	f.verify(t, r.Username, r.Password, "mbzrxpgjys")

	// No username: a random opaque user id, as for Ferry's own form; no ttl: the default.
	rec = f.do(t, "GET", "/v1/ice-servers?service=turn&key="+url.QueryEscape(f.key), "", "Authorization", "")
	if r := decode[restResponse](t, rec); rec.Code != 200 || r.TTL != 43200 || len(r.Username) != len("1796040000:")+24 {
		t.Fatalf("minimal draft request: %d %s", rec.Code, rec.Body)
	}
	// An explicit format still wins.
	rec = f.do(t, "GET", "/v1/ice-servers?service=turn&format=array&key="+url.QueryEscape(f.key), "", "Authorization", "")
	if arr := decode[[]ICEServer](t, rec); len(arr) != 2 || arr[0].URLs[0] != "stun:turn.clinic.example:3478" {
		t.Fatalf("format=array with the draft form: %s", rec.Body)
	}
}

// The key parameter is checked like the header; the header, when present, wins; the draft
// defines only the turn service; and the rate limit holds per key in either form.
func TestDraftRequestRefusals(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		query, header string
		code          int
		errCode       string
	}{
		{"service=turn", "", 401, "unauthorized"},
		{"service=turn&key=fk_wrong", "", 401, "unauthorized"},
		{"service=turn&key=" + url.QueryEscape(f.key), "Bearer fk_wrong", 401, "unauthorized"},
		{"service=stun&key=" + url.QueryEscape(f.key), "", 400, "bad_request"},
		{"service=turn&service=turn&key=" + url.QueryEscape(f.key), "", 400, "bad_request"},
		{"service=turn&username=a%00b&key=" + url.QueryEscape(f.key), "", 400, "bad_request"},
		{"service=turn&ttl=-5&key=" + url.QueryEscape(f.key), "", 400, "bad_request"},
	} {
		rec := f.do(t, "GET", "/v1/ice-servers?"+tc.query, "", "Authorization", tc.header)
		if e := decode[apiError](t, rec); rec.Code != tc.code || e.Error.Code != tc.errCode {
			t.Errorf("%s (Authorization %q): %d %s, want %d %s", tc.query, tc.header, rec.Code, rec.Body, tc.code, tc.errCode)
		}
	}
	if rec := f.do(t, "GET", "/v1/ice-servers?service=turn&key=fk_wrong", ""); rec.Code != 200 {
		t.Fatalf("a valid Authorization header must win over the key parameter: %d %s", rec.Code, rec.Body)
	}
	// Nothing of the key reaches the access log.
	for _, r := range f.sink.recs {
		if strings.Contains(r.Route+r.UserAgent, f.key) || r.Route != "/v1/ice-servers" {
			t.Fatalf("access record %+v", r)
		}
	}

	f = newFixture(t, func(c *Config) { c.BurstPerKey = 2; c.RatePerKey = 0.001 })
	if rec := f.do(t, "GET", "/v1/ice-servers?service=turn", ""); rec.Code != 200 {
		t.Fatalf("first request: %d", rec.Code)
	}
	if rec := f.do(t, "GET", "/v1/ice-servers?service=turn&key="+url.QueryEscape(f.key), "", "Authorization", ""); rec.Code != 200 {
		t.Fatalf("second request within the burst: %d", rec.Code)
	}
	rec := f.do(t, "GET", "/v1/ice-servers?service=turn&key="+url.QueryEscape(f.key), "", "Authorization", "")
	if rec.Code != 429 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("the key's rate limit must hold in the draft form: %d", rec.Code)
	}
}
