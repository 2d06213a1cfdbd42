package main

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ferryrelay/ferry/config"
)

// A reload names what it applied and what waits for a restart, by key only (values may be
// secrets); listener addresses are told apart.
func TestReloadChangeReport(t *testing.T) {
	a, err := config.Load(config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := config.Load(config.Options{Environ: []string{"FERRY_AUTH_SECRETS=s3cret-value", "FERRY_RELAY_MAX_ALLOCATIONS=9",
		"FERRY_TURN_UDP_LISTEN=127.0.0.1:3999", "FERRY_ROOMS_WAITING_ROOM=false", "FERRY_LOG_LEVEL=debug"}})
	changed := changedKeys(a, b)
	want := []string{"auth.secrets", "log.level", "relay.max_allocations", "rooms.waiting_room", "turn.udp_listen"}
	if !slices.Equal(changed, want) {
		t.Fatalf("changed %v, want %v", changed, want)
	}
	applied, later := splitChanges(changed)
	if !slices.Equal(applied, []string{"auth.secrets", "log.level", "relay.max_allocations"}) ||
		!slices.Equal(later, []string{"rooms.waiting_room", "turn.udp_listen"}) {
		t.Fatalf("applied %v, later %v", applied, later)
	}
	if len(changedKeys(a, a)) != 0 {
		t.Fatal("no change reported as a change")
	}
	// Every reloadable key is a real key of the configuration.
	known := flatten(a)
	for _, k := range append(slices.Clone(reloadable), listenerKeys...) {
		if _, ok := known[k]; !ok {
			t.Errorf("%s is not a configuration key", k)
		}
	}
}

func TestReloadProblems(t *testing.T) {
	_, err := config.Load(config.Options{Environ: []string{"FERRY_LOG_LEVEL=loud", "FERRY_RELAY_PORT_MIN=x"}})
	got := reloadProblems(err)
	if len(got) != 2 || !strings.Contains(got[0]+got[1], "FERRY_LOG_LEVEL (log.level)") {
		t.Fatalf("problems %q", got)
	}
	if got := reloadProblems(errString("rooms: key file: denied")); len(got) != 1 || got[0] != "rooms: key file: denied" {
		t.Fatalf("plain error: %q", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// ferry reload and ferry drain find the admin listener on loopback when it listens on every
// address, and not at all on port 0 or without one.
func TestAdminURL(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:9641": "http://127.0.0.1:9641", "0.0.0.0:9641": "http://127.0.0.1:9641",
		"[::]:9641": "http://[::1]:9641", ":9641": "http://127.0.0.1:9641", "": "", "127.0.0.1:0": ""} {
		f := &config.File{}
		f.Admin.Listen = in
		if got := adminURL(f); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// The operator's actions refuse other methods and anything a web page could send.
func TestAdminActionsRefuseBrowsers(t *testing.T) {
	s := &server{drainReq: make(chan struct{}, 1)}
	h := s.adminHandler(http.NotFoundHandler())
	for _, c := range []struct {
		method, path, origin string
		want                 int
	}{
		{"POST", "/-/reload", "https://evil.example", 403},
		{"POST", "/-/drain", "http://localhost:3000", 403},
		{"GET", "/-/reload", "", 405},
		{"DELETE", "/-/drain", "", 405},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s %s (Origin %q): %d, want %d", c.method, c.path, c.origin, rec.Code, c.want)
		}
	}
	if len(s.drainReq) != 0 {
		t.Fatal("a refused request started a drain")
	}
}

// ferry secret new prints one fresh 32-byte secret and nothing else.
func TestSecretNew(t *testing.T) {
	a, _, err := runCmd(t, "secret", "new")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := runCmd(t, "secret", "new")
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSuffix(a, "\n"))
	if err != nil || len(raw) != 32 || a == b || strings.Count(a, "\n") != 1 {
		t.Fatalf("secret %q (%v), then %q", a, err, b)
	}
}

// ferry reload says what the server applied, what waits for a restart, and when the server
// reads another file than the one given (it re-reads its own, never the command's).
func TestPrintReload(t *testing.T) {
	file, none := "/etc/ferry/ferry.yaml", ""
	for _, c := range []struct {
		st            opsStatus
		given         string
		out, warnings []string
	}{
		{opsStatus{Status: "reloaded", ConfigFile: &file}, file,
			[]string{"nothing that a reload applies had changed"}, nil},
		{opsStatus{Status: "reloaded", Applied: []string{"api.keys"}, Restart: []string{"relay.port_min"}, ConfigFile: &file}, file,
			[]string{"applied api.keys"}, []string{"take effect only when Ferry restarts: relay.port_min"}},
		{opsStatus{Status: "reloaded", ConfigFile: &file}, "/tmp/other.yaml",
			nil, []string{"the server reads /etc/ferry/ferry.yaml, not /tmp/other.yaml"}},
		{opsStatus{Status: "reloaded", ConfigFile: &none}, "/tmp/other.yaml",
			nil, []string{"runs without a configuration file", "restart it with --config /tmp/other.yaml"}},
	} {
		var out, warn strings.Builder
		printReload(&out, &warn, c.st, c.given)
		for _, w := range c.out {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%+v: output %q lacks %q", c.st, out.String(), w)
			}
		}
		for _, w := range c.warnings {
			if !strings.Contains(warn.String(), w) {
				t.Errorf("%+v: warnings %q lack %q", c.st, warn.String(), w)
			}
		}
		if c.warnings == nil && warn.Len() > 0 {
			t.Errorf("%+v: unexpected warnings %q", c.st, warn.String())
		}
	}
}
