package signaling

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// FuzzICEServersRequest sends arbitrary query strings and JSON bodies to /v1/ice-servers
// with a valid API key, as GET and as POST, in Ferry's form and the TURN REST draft's.
// Nothing panics and nothing answers 5xx; every answer is JSON; a 200 carries a credential the
// relay accepts, in the shape the request asked for; an error names its problem without
// echoing the body. Seeds: testdata/fuzz/FuzzICEServersRequest.
func FuzzICEServersRequest(f *testing.F) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	a, err := auth.New(auth.Config{Secrets: []string{testSecret}, MaxTTL: 24 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	key, sum, err := NewAPIKey()
	if err != nil {
		f.Fatal(err)
	}
	h := NewHandler(Config{Auth: a, URLs: BuildURLs("turn.clinic.example", []int{3478}, []int{3478}, []int{443}),
		APIKeys: []APIKey{{Name: "app", SHA256: sum}}, RatePerKey: -1, Now: func() time.Time { return now }})
	f.Fuzz(func(t *testing.T, post bool, query string, body []byte) {
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		u := &url.URL{Path: "/v1/ice-servers", RawQuery: query}
		req := httptest.NewRequest(method, "http://ferry.test/", strings.NewReader(string(body)))
		req.URL, req.RequestURI = u, u.RequestURI()
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		out := rec.Body.Bytes()
		if rec.Code >= 500 {
			t.Fatalf("%s ?%s %q: %d %s", method, query, body, rec.Code, out)
		}
		if !json.Valid(out) {
			t.Fatalf("%d answer is not JSON: %q", rec.Code, out)
		}
		if rec.Code != http.StatusOK {
			if len(body) > 12 && strings.Contains(string(out), string(body)) {
				t.Fatalf("the error echoes the body: %s", out)
			}
			return
		}
		var creds []struct{ user, password string }
		var conf RTCConfiguration
		var rest restResponse
		var array []ICEServer
		switch {
		case json.Unmarshal(out, &rest) == nil && rest.Username != "":
			creds = append(creds, struct{ user, password string }{rest.Username, rest.Password})
		case json.Unmarshal(out, &conf) == nil && len(conf.ICEServers) > 0:
			array = conf.ICEServers
		case json.Unmarshal(out, &array) == nil && len(array) > 0:
		default:
			t.Fatalf("a 200 in no known shape: %s", out)
		}
		for _, s := range array {
			if s.Username != "" {
				creds = append(creds, struct{ user, password string }{s.Username, s.Credential})
			}
		}
		if len(creds) == 0 {
			t.Fatalf("a 200 without a credential: %s", out)
		}
		for _, c := range creds {
			id, err := a.Lookup(c.user)
			if err != nil || id.Passwords[0] != c.password {
				t.Fatalf("issued %q, which the relay refuses: %v", c.user, err)
			}
		}
	})
}
