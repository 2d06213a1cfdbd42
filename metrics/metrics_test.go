package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// The admin handler serves the registry, health and readiness; profiling only when asked.
func TestAdminHandler(t *testing.T) {
	reg := NewRegistry(BuildInfo{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26"})
	certs, err := NewCertificateExpiry(reg)
	if err != nil {
		t.Fatal(err)
	}
	certs.Set("turn", time.Unix(1800000000, 0))
	ready := false
	h := AdminHandler(AdminConfig{Registry: reg, Ready: func() (bool, string) { return ready, "draining" }})

	code, body := get(t, h, "/metrics")
	for _, want := range []string{
		`ferry_build_info{goversion="go1.26",revision="abc",version="v1.2.3"} 1`,
		`ferry_tls_certificate_expiry_timestamp_seconds{listener="turn"} 1.8e+09`,
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	// The same JSON as the HTTP listener's /healthz and /readyz.
	if code, body := get(t, h, "/healthz"); code != 200 || body != `{"status":"ok"}`+"\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 503 || body != `{"status":"not ready","reason":"draining"}`+"\n" {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	ready = true
	if code, body := get(t, h, "/readyz"); code != 200 || body != `{"status":"ready"}`+"\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, _ := get(t, h, "/debug/pprof/"); code != 404 {
		t.Errorf("pprof without admin.pprof: %d", code)
	}
	if code, _ := get(t, AdminHandler(AdminConfig{Registry: reg, Pprof: true}), "/debug/pprof/"); code != 200 {
		t.Errorf("pprof with admin.pprof: %d", code)
	}
	// A second registration of the same gauge is an error, not a panic.
	if _, err := NewCertificateExpiry(reg); err == nil {
		t.Error("registered the certificate gauge twice")
	}
}

// Reloads are counted by result; a failure keeps the time of the last good load and says so
// in ferry_config_last_reload_successful; a drain shows what remains and its deadline.
func TestOperations(t *testing.T) {
	reg := NewRegistry(BuildInfo{})
	o, err := NewOperations(reg)
	if err != nil {
		t.Fatal(err)
	}
	o.Loaded(time.Unix(1000, 0))
	o.Reloaded(false, time.Unix(2000, 0))
	o.Reloaded(true, time.Unix(3000, 0))
	o.Reloaded(false, time.Unix(4000, 0))
	o.Draining(3, time.Unix(5000, 0))
	o.Remaining(1)
	_, body := get(t, Handler(reg), "/metrics")
	for _, want := range []string{
		`ferry_config_reloads_total{result="failure"} 2`,
		`ferry_config_reloads_total{result="success"} 1`,
		`ferry_config_last_reload_successful 0`,
		`ferry_config_last_reload_success_timestamp_seconds 3000`,
		`ferry_draining 1`,
		`ferry_drain_remaining_allocations 1`,
		`ferry_drain_deadline_timestamp_seconds 5000`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if _, err := NewOperations(reg); err == nil {
		t.Error("registered the operations metrics twice")
	}
}
