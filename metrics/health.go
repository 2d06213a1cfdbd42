package metrics

import (
	"encoding/json"
	"net/http"
)

// Readiness reports whether Ferry takes new work (new allocations, new rooms) and, when it
// does not, why: a short reason from a fixed set ("stopping", "draining", "capacity").
type Readiness func() (ready bool, reason string)

// Health is the JSON body of /healthz and /readyz, on the HTTP and the admin listener alike:
// {"status":"ok"}, {"status":"ready"} or {"status":"not ready","reason":"draining"}.
type Health struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// HealthHandler answers /healthz: 200 {"status":"ok"} while the process serves.
func HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, http.StatusOK, Health{Status: "ok"})
	})
}

// ReadyHandler answers /readyz: 200 {"status":"ready"}, or 503 {"status":"not ready",
// "reason":...} while ready says no. A nil ready is always ready.
func ReadyHandler(ready Readiness) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if ok, reason := ready(); !ok {
				writeHealth(w, http.StatusServiceUnavailable, Health{Status: "not ready", Reason: reason})
				return
			}
		}
		writeHealth(w, http.StatusOK, Health{Status: "ready"})
	})
}

func writeHealth(w http.ResponseWriter, status int, h Health) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(h)
}
