// Package metrics is Ferry's Prometheus registry: build information, the Go and process
// collectors, and the /metrics handler. Components register their own collectors on it.
package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"

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
