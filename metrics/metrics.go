// Package metrics is Ferry's Prometheus registry: build information, the Go and process
// collectors, and the /metrics handler. Components register their own collectors on it.
package metrics

import (
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// BuildInfo identifies the running binary.
type BuildInfo struct {
	Version   string // module version, or "devel"
	Revision  string // VCS revision, or "unknown"
	GoVersion string
}

// ReadBuildInfo returns the binary's version information from the Go build metadata.
func ReadBuildInfo() BuildInfo {
	bi := BuildInfo{Version: "devel", Revision: "unknown", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		bi.Version = v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			bi.Revision = s.Value
		}
	}
	return bi
}

// NewRegistry returns a fresh registry with ferry_build_info and the Go and process
// collectors. There is no global registry: each server, test or benchmark makes its own.
func NewRegistry(bi BuildInfo) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ferry_build_info",
		Help: "Always 1; the labels identify the running binary.",
	}, []string{"version", "revision", "goversion"})
	info.WithLabelValues(bi.Version, bi.Revision, bi.GoVersion).Set(1)
	reg.MustRegister(info)
	return reg
}

// Handler serves the registry in the Prometheus exposition formats.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// AdminConfig configures the admin listener's handler.
type AdminConfig struct {
	// Registry is served at /metrics.
	Registry *prometheus.Registry
	// Ready reports readiness for /readyz; nil means always ready.
	Ready Readiness
	// Pprof mounts net/http/pprof under /debug/pprof/.
	Pprof bool
}

// AdminHandler serves /metrics, /healthz, /readyz (JSON, as on the HTTP listener) and, when
// enabled, /debug/pprof/. It belongs on a listener of its own (127.0.0.1 by default), never
// on the public one.
func AdminHandler(cfg AdminConfig) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(cfg.Registry))
	mux.Handle("/healthz", HealthHandler())
	mux.Handle("/readyz", ReadyHandler(cfg.Ready))
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// CertificateExpiry is ferry_tls_certificate_expiry_timestamp_seconds{listener}: when the
// certificate a TLS listener serves stops being valid.
type CertificateExpiry struct{ g *prometheus.GaugeVec }

// NewCertificateExpiry registers the gauge on reg.
func NewCertificateExpiry(reg prometheus.Registerer) (*CertificateExpiry, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ferry_tls_certificate_expiry_timestamp_seconds",
		Help: "NotAfter of the certificate each TLS listener serves, as a Unix timestamp in seconds.",
	}, []string{"listener"})
	if err := reg.Register(g); err != nil {
		return nil, err
	}
	return &CertificateExpiry{g}, nil
}

// Set records the expiry of listener's certificate ("turn" or "http").
func (c *CertificateExpiry) Set(listener string, notAfter time.Time) {
	c.g.WithLabelValues(listener).Set(float64(notAfter.Unix()))
}
