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
	h := AdminHandler(AdminConfig{Registry: reg, Ready: func() bool { return ready }})

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
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != 503 {
		t.Errorf("/readyz while not ready: %d", code)
	}
	ready = true
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
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
