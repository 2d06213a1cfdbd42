package signaling

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const testSecret = "signaling-test-secret"

type recordSink struct {
	mu   sync.Mutex
	recs []AccessRecord
}

func (s *recordSink) HTTPRequest(r AccessRecord) {
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

type fixture struct {
	h       http.Handler
	key     string
	auth    *auth.Authenticator
	now     time.Time
	metrics *Metrics
	sink    *recordSink
	ready   bool
}

func newFixture(t *testing.T, mutate ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), sink: &recordSink{}, ready: true}
	a, err := auth.New(auth.Config{Secrets: []string{testSecret}, MaxTTL: 24 * time.Hour, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	f.auth = a
	key, sum, err := NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	f.key = key
	f.metrics, err = NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Auth:           a,
		URLs:           BuildURLs("turn.clinic.example", []int{3478}, []int{3478}, []int{443}),
		APIKeys:        []APIKey{{Name: "app", SHA256: sum}},
		AllowedOrigins: []string{"https://app.clinic.example"},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Metrics:        f.metrics,
		Access:         f.sink,
		Ready:          func() (bool, string) { return f.ready, "draining" },
		Now:            func() time.Time { return f.now },
	}
	for _, m := range mutate {
		m(&cfg)
	}
	f.h = NewHandler(cfg)
	return f
}

func (f *fixture) do(t *testing.T, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.key)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("response is not the expected JSON (%v): %s", err, rec.Body)
	}
	return v
}

// verify checks that a credential the endpoint issued is one the relay accepts.
func (f *fixture) verify(t *testing.T, username, password, wantUser string) {
	t.Helper()
	id, err := f.auth.Lookup(username)
	if err != nil {
		t.Fatalf("issued username %q does not verify: %v", username, err)
	}
	if id.Passwords[0] != password {
		t.Fatalf("issued password does not match the relay's")
	}
	if wantUser != "" && id.UserID != wantUser {
		t.Fatalf("user id %q, want %q", id.UserID, wantUser)
	}
}

func TestICEServersDefaultShape(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, "GET", "/v1/ice-servers?user=dr:smith", "")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d headers %v", rec.Code, rec.Header())
	}
	// The shape RTCPeerConnection takes: urls always an array.
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	servers := raw["iceServers"].([]any)
	if len(servers) != 2 {
		t.Fatalf("iceServers: %v", servers)
	}
	stun := servers[0].(map[string]any)
	if urls, ok := stun["urls"].([]any); !ok || len(urls) != 1 || urls[0] != "stun:turn.clinic.example:3478" {
		t.Fatalf("stun entry: %v", stun)
	}
	if _, has := stun["username"]; has {
		t.Fatal("the stun entry must carry no credential")
	}
	turn := servers[1].(map[string]any)
	urls := turn["urls"].([]any)
	want := []string{"turn:turn.clinic.example:3478?transport=udp", "turn:turn.clinic.example:3478?transport=tcp", "turns:turn.clinic.example:443?transport=tcp"}
	if len(urls) != 3 || urls[0] != want[0] || urls[1] != want[1] || urls[2] != want[2] {
		t.Fatalf("turn urls: %v", urls)
	}
	f.verify(t, turn["username"].(string), turn["credential"].(string), "dr:smith")
	if raw["ttl"].(float64) != 43200 || raw["expiresAt"] != "2026-11-30T00:00:00Z" {
		t.Fatalf("ttl %v expiresAt %v", raw["ttl"], raw["expiresAt"])
	}
	if _, has := raw["iceTransportPolicy"]; has {
		t.Fatal("iceTransportPolicy must only be echoed when asked for")
	}
	if got := testutil.ToFloat64(f.metrics.issued); got != 1 {
		t.Fatalf("credentials issued: %v", got)
	}
}

func TestICEServersParameters(t *testing.T) {
	f := newFixture(t)
	// POST JSON body, transports filter, policy echoed, TTL capped at auth.max_ttl.
	rec := f.do(t, "POST", "/v1/ice-servers", `{"ttl": 999999, "transports": ["tls"], "iceTransportPolicy": "relay"}`)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	c := decode[RTCConfiguration](t, rec)
	if c.TTL != 86400 || c.ICETransportPolicy != "relay" {
		t.Fatalf("ttl %d policy %q", c.TTL, c.ICETransportPolicy)
	}
	if len(c.ICEServers) != 2 || len(c.ICEServers[1].URLs) != 1 || c.ICEServers[1].URLs[0] != "turns:turn.clinic.example:443?transport=tcp" {
		t.Fatalf("filtered servers: %+v", c.ICEServers)
	}
	id, _ := f.auth.Lookup(c.ICEServers[1].Username)
	if id.Expires.Sub(f.now) != 24*time.Hour {
		t.Fatalf("username expiry %s does not match the capped ttl", id.Expires)
	}
	if len(id.UserID) != 24 {
		t.Fatalf("a missing user must get a random opaque id, got %q", id.UserID)
	}
	// Query parameters; the username's timestamp matches the ttl in seconds (C13).
	rec = f.do(t, "GET", "/v1/ice-servers?ttl=60&transports=udp,tcp", "")
	c = decode[RTCConfiguration](t, rec)
	id, _ = f.auth.Lookup(c.ICEServers[1].Username)
	if c.TTL != 60 || id.Expires.Unix() != f.now.Unix()+60 || len(c.ICEServers[1].URLs) != 2 {
		t.Fatalf("query params: %+v expiry %d", c, id.Expires.Unix())
	}
}

func TestICEServersOtherFormats(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, "GET", "/v1/ice-servers?format=rest&ttl=3600&user=u1", "")
	r := decode[restResponse](t, rec)
	if r.TTL != 3600 || len(r.URIs) != 3 || !strings.HasPrefix(r.URIs[0], "turn:") {
		t.Fatalf("rest format: %+v", r)
	}
	f.verify(t, r.Username, r.Password, "u1")

	rec = f.do(t, "GET", "/v1/ice-servers?format=array", "")
	arr := decode[[]ICEServer](t, rec)
	if len(arr) != 2 || arr[1].Username == "" || len(arr[0].URLs) != 1 {
		t.Fatalf("array format: %+v", arr)
	}
	f.verify(t, arr[1].Username, arr[1].Credential, "")
}

func TestICEServersBadParameters(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ method, target, body, contains string }{
		{"GET", "/v1/ice-servers?ttl=abc", "", "ttl"},
		{"GET", "/v1/ice-servers?ttl=-5", "", "ttl"},
		{"GET", "/v1/ice-servers?ttl=0", "", "ttl"},
		{"GET", "/v1/ice-servers?ttl=1.5", "", "ttl"},
		{"POST", "/v1/ice-servers", `{"ttl": "soon"}`, "ttl"},
		{"POST", "/v1/ice-servers", `{"ttl": -1}`, "ttl"},
		{"GET", "/v1/ice-servers?transports=sctp", "", `unknown transport "sctp"`},
		{"POST", "/v1/ice-servers", `{"transports": ["udp", "quic"]}`, `unknown transport "quic"`},
		{"GET", "/v1/ice-servers?iceTransportPolicy=none", "", "iceTransportPolicy"},
		{"GET", "/v1/ice-servers?format=xml", "", "format"},
		{"GET", "/v1/ice-servers?user=a%00b", "", "user"},
		{"GET", "/v1/ice-servers?user=" + strings.Repeat("x", 300), "", "user"},
		{"POST", "/v1/ice-servers", `{"ttl": 60`, "JSON"},
		{"POST", "/v1/ice-servers", `{"colour": "blue"}`, "unknown field"},
		{"POST", "/v1/ice-servers", `[1,2]`, "JSON"},
	} {
		rec := f.do(t, tc.method, tc.target, tc.body)
		if rec.Code != 400 {
			t.Errorf("%s %s %s: %d, want 400", tc.method, tc.target, tc.body, rec.Code)
			continue
		}
		e := decode[apiError](t, rec)
		if e.Error.Code != "bad_request" || !strings.Contains(e.Error.Message, tc.contains) {
			t.Errorf("%s %s %s: error %+v, want mention of %q", tc.method, tc.target, tc.body, e, tc.contains)
		}
	}
	rec := f.do(t, "POST", "/v1/ice-servers", `{"user": "`+strings.Repeat("x", 20000)+`"}`)
	if rec.Code != 413 || decode[apiError](t, rec).Error.Code != "payload_too_large" {
		t.Fatalf("oversized body: %d %s", rec.Code, rec.Body)
	}
	rec = f.do(t, "DELETE", "/v1/ice-servers", "")
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, POST" || decode[apiError](t, rec).Error.Code != "method_not_allowed" {
		t.Fatalf("DELETE: %d %v", rec.Code, rec.Header())
	}
	rec = f.do(t, "GET", "/nope", "")
	if rec.Code != 404 || decode[apiError](t, rec).Error.Code != "not_found" {
		t.Fatalf("unknown route: %d", rec.Code)
	}
}

func TestICEServersAuth(t *testing.T) {
	f := newFixture(t)
	for name, hdr := range map[string]string{
		"missing":      "",
		"unknown key":  "Bearer fk_not-a-key",
		"wrong scheme": "Basic " + f.key,
		"empty bearer": "Bearer ",
	} {
		rec := f.do(t, "GET", "/v1/ice-servers", "", "Authorization", hdr)
		if rec.Code != 401 || decode[apiError](t, rec).Error.Code != "unauthorized" || rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), testSecret) || strings.Contains(rec.Body.String(), "username") {
			t.Errorf("%s: the error leaks credentials", name)
		}
	}
	noKeys := newFixture(t, func(c *Config) { c.APIKeys = nil })
	if rec := noKeys.do(t, "GET", "/v1/ice-servers", ""); rec.Code != 401 {
		t.Fatalf("without configured keys: %d", rec.Code)
	}
}

func TestICEServersRateLimitPerKey(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RatePerKey, c.BurstPerKey = 1, 3 })
	for i := range 3 {
		if rec := f.do(t, "GET", "/v1/ice-servers", ""); rec.Code != 200 {
			t.Fatalf("request %d within the burst: %d", i, rec.Code)
		}
	}
	rec := f.do(t, "GET", "/v1/ice-servers", "")
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || decode[apiError](t, rec).Error.Code != "rate_limited" {
		t.Fatalf("over the limit: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Another key has its own budget.
	other, sum, _ := NewAPIKey()
	f2 := newFixture(t, func(c *Config) {
		c.RatePerKey, c.BurstPerKey = 1, 1
		c.APIKeys = append(c.APIKeys, APIKey{Name: "other", SHA256: sum})
	})
	if rec := f2.do(t, "GET", "/v1/ice-servers", ""); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
	if rec := f2.do(t, "GET", "/v1/ice-servers", ""); rec.Code != 429 {
		t.Fatalf("first key over its limit: %d", rec.Code)
	}
	if rec := f2.do(t, "GET", "/v1/ice-servers", "", "Authorization", "Bearer "+other); rec.Code != 200 {
		t.Fatalf("second key throttled by the first: %d", rec.Code)
	}
	// Time refills the bucket.
	f.now = f.now.Add(time.Second)
	if rec := f.do(t, "GET", "/v1/ice-servers", ""); rec.Code != 200 {
		t.Fatalf("after a second: %d", rec.Code)
	}
}

func TestCORS(t *testing.T) {
	f := newFixture(t)
	pre := f.do(t, "OPTIONS", "/v1/ice-servers", "", "Authorization", "",
		"Origin", "https://app.clinic.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type")
	if pre.Code != 204 || pre.Header().Get("Access-Control-Allow-Origin") != "https://app.clinic.example" ||
		!strings.Contains(pre.Header().Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(pre.Header().Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight: %d %v", pre.Code, pre.Header())
	}
	rec := f.do(t, "GET", "/v1/ice-servers", "", "Origin", "https://app.clinic.example")
	if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.clinic.example" ||
		!strings.Contains(strings.Join(rec.Header().Values("Vary"), ","), "Origin") {
		t.Fatalf("actual request: %v", rec.Header())
	}
	bad := f.do(t, "OPTIONS", "/v1/ice-servers", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "GET")
	if bad.Code != 403 || bad.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign preflight: %d %v", bad.Code, bad.Header())
	}
	rec = f.do(t, "GET", "/v1/ice-servers", "", "Origin", "https://evil.example")
	if acao := rec.Header().Get("Access-Control-Allow-Origin"); acao != "" {
		t.Fatalf("foreign origin got ACAO %q", acao)
	}
	for _, r := range []*httptest.ResponseRecorder{pre, rec, bad} {
		if r.Header().Get("Access-Control-Allow-Origin") == "*" {
			t.Fatal("never a wildcard origin")
		}
	}
}

// Health and readiness answer the same JSON as the admin listener; probes (and a stray
// /metrics scrape) are counted in metrics but never written to the access records, which
// would otherwise fill the allocation log with a load balancer's address every few seconds.
func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t)
	if rec := f.do(t, "GET", "/healthz", "", "Authorization", ""); rec.Code != 200 || rec.Body.String() != `{"status":"ok"}`+"\n" {
		t.Fatalf("healthz: %d %s", rec.Code, rec.Body)
	}
	if rec := f.do(t, "GET", "/readyz", "", "Authorization", ""); rec.Code != 200 || rec.Body.String() != `{"status":"ready"}`+"\n" {
		t.Fatalf("readyz: %d %s", rec.Code, rec.Body)
	}
	f.ready = false
	if rec := f.do(t, "GET", "/readyz", "", "Authorization", ""); rec.Code != 503 || rec.Body.String() != `{"status":"not ready","reason":"draining"}`+"\n" {
		t.Fatalf("readyz while draining: %d %s", rec.Code, rec.Body)
	}
	if rec := f.do(t, "GET", "/healthz", "", "Authorization", ""); rec.Code != 200 {
		t.Fatalf("healthz while stopping: %d", rec.Code)
	}
	f.do(t, "GET", "/metrics", "", "Authorization", "")
	f.sink.mu.Lock()
	n := len(f.sink.recs)
	f.sink.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d probes written to the access records", n)
	}
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("/readyz", "503")); got != 1 {
		t.Fatalf("probes still count in metrics: %v", got)
	}
	f.do(t, "GET", "/v1/ice-servers", "")
	if f.sink.mu.Lock(); len(f.sink.recs) != 1 {
		t.Fatal("API requests must still be recorded")
	}
	f.sink.mu.Unlock()
}

// A reload replaces the API keys: the new key works at once, a removed one gets 401.
func TestSetAPIKeys(t *testing.T) {
	f := newFixture(t)
	newKey, sum, _ := NewAPIKey()
	f.h.(*Handler).SetAPIKeys([]APIKey{{Name: "rotated", SHA256: sum}})
	if rec := f.do(t, "GET", "/v1/ice-servers", ""); rec.Code != 401 {
		t.Fatalf("removed key: %d, want 401", rec.Code)
	}
	if rec := f.do(t, "GET", "/v1/ice-servers", "", "Authorization", "Bearer "+newKey); rec.Code != 200 {
		t.Fatalf("new key: %d", rec.Code)
	}
}

// X-Forwarded-For counts only from a trusted proxy; the access record (for the 48 h log)
// gets the client address, metrics get only bounded labels.
func TestAccessRecordsAndForwardedFor(t *testing.T) {
	f := newFixture(t)
	req := func(remote, xff string) AccessRecord {
		r := httptest.NewRequest("GET", "/v1/ice-servers", nil)
		r.RemoteAddr = remote
		r.Header.Set("Authorization", "Bearer "+f.key)
		r.Header.Set("User-Agent", "test-agent/1")
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		f.h.ServeHTTP(httptest.NewRecorder(), r)
		f.sink.mu.Lock()
		defer f.sink.mu.Unlock()
		return f.sink.recs[len(f.sink.recs)-1]
	}
	if r := req("198.51.100.7:5555", "203.0.113.9"); r.ClientIP.String() != "198.51.100.7" {
		t.Fatalf("untrusted proxy's XFF believed: %s", r.ClientIP)
	}
	if r := req("10.0.0.2:5555", "203.0.113.9, 10.0.0.3"); r.ClientIP.String() != "203.0.113.9" {
		t.Fatalf("trusted proxy chain: %s", r.ClientIP)
	}
	r := req("10.0.0.2:5555", "garbage")
	if r.ClientIP.String() != "10.0.0.2" || r.Route != "/v1/ice-servers" || r.Status != 200 || r.UserAgent != "test-agent/1" {
		t.Fatalf("record: %+v", r)
	}
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("/v1/ice-servers", "200")); got != 3 {
		t.Fatalf("requests counted: %v", got)
	}
	f.do(t, "GET", "/some/user/path/alice", "")
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("other", "404")); got != 1 {
		t.Fatal("unknown paths must be counted under a bounded label")
	}
}

func TestAPIKeyHashRoundTrip(t *testing.T) {
	key, sum, err := NewAPIKey()
	if err != nil || !strings.HasPrefix(key, "fk_") || len(key) != 46 {
		t.Fatalf("key %q %v", key, err)
	}
	parsed, err := ParseAPIKeyHash(strings.ToUpper(hexString(sum)))
	if err != nil || parsed != sum {
		t.Fatalf("hash round trip: %v", err)
	}
	if _, err := ParseAPIKeyHash("abc"); err == nil {
		t.Fatal("a short hash must fail")
	}
}

func hexString(b [32]byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 64)
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}

func TestURLsForIPv6AndTLS(t *testing.T) {
	var got []string
	for _, u := range BuildURLs("2001:db8::1", []int{3478, 3478}, nil, []int{443, 5349}) {
		got = append(got, u.String())
	}
	want := "stun:[2001:db8::1]:3478 turn:[2001:db8::1]:3478?transport=udp turns:[2001:db8::1]:443?transport=tcp turns:[2001:db8::1]:5349?transport=tcp"
	if strings.Join(got, " ") != want {
		t.Fatalf("urls %q, want %q", got, want)
	}
}

// A JSON body is one JSON object and nothing else, with a number for ttl (the README's
// shape): a string ttl, data after the object and a second object get 400 naming the
// problem; trailing whitespace and a whole number in exponent notation are fine; a ttl too
// large for any clock is capped like any other above auth.max_ttl.
func TestICEServersBodyIsStrict(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ body, contains string }{
		{`{"ttl":"60"}`, "ttl must be a whole number, not a string"},
		{`{"ttl":60} garbage`, "more data after the object"},
		{`{"ttl":60}{"ttl":70}`, "more data after the object"},
		{`{"ttl":60}]`, "more data after the object"},
		{`null`, "one JSON object"},
		{`"ttl"`, "not a JSON object"},
		{`{"user":7}`, "user must be a string, not a number"},
		{`{"transports":"udp"}`, "transports must be an array, not a string"},
		{`{"ttl":1.5}`, "ttl must be a positive whole number"},
	} {
		rec := f.do(t, "POST", "/v1/ice-servers", tc.body)
		e := decode[apiError](t, rec)
		if rec.Code != 400 || !strings.Contains(e.Error.Message, tc.contains) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.body, rec.Code, e.Error.Message, tc.contains)
		}
	}
	for body, ttl := range map[string]int64{"{\"ttl\":60}\n \t": 60, `{"ttl":3.6e3}`: 3600, `{"ttl":1e30}`: 86400,
		`{"ttl":100000000000000000000}`: 86400} {
		rec := f.do(t, "POST", "/v1/ice-servers", body)
		if c := decode[RTCConfiguration](t, rec); rec.Code != 200 || c.TTL != ttl {
			t.Errorf("%q: %d ttl %d, want 200 with ttl %d", body, rec.Code, c.TTL, ttl)
		}
	}
}
