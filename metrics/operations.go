package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operations are the metrics of operating a running server: configuration reloads and
// drains.
//
//	ferry_config_reloads_total{result="success"|"failure"}
//	ferry_config_last_reload_successful                  1 or 0
//	ferry_config_last_reload_success_timestamp_seconds   the last good load, start-up included
//	ferry_draining                                       1 while draining
//	ferry_drain_remaining_allocations                    allocations left, while draining
//	ferry_drain_deadline_timestamp_seconds               when server.drain_timeout ends the drain
type Operations struct {
	reloads       *prometheus.CounterVec
	lastOK        prometheus.Gauge
	lastSuccess   prometheus.Gauge
	draining      prometheus.Gauge
	remaining     prometheus.Gauge
	drainDeadline prometheus.Gauge
}

// NewOperations registers the operations metrics on reg.
func NewOperations(reg prometheus.Registerer) (*Operations, error) {
	o := &Operations{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_config_reloads_total",
			Help: "Configuration reloads (SIGHUP, ferry reload), by result: success, or failure (the old configuration stays).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_config_last_reload_successful",
			Help: "1 when the last configuration load succeeded, 0 when it failed and the previous configuration still runs.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded (start-up or the last good reload), as a Unix timestamp.",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_draining",
			Help: "1 while Ferry drains (SIGTERM): new allocations and rooms are refused, existing ones go on.",
		}),
		remaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_drain_remaining_allocations",
			Help: "Allocations the drain waits for, updated every 30 s and when the drain starts; 0 when not draining.",
		}),
		drainDeadline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_drain_deadline_timestamp_seconds",
			Help: "When server.drain_timeout stops a running drain, as a Unix timestamp; 0 when not draining.",
		}),
	}
	for _, c := range []prometheus.Collector{o.reloads, o.lastOK, o.lastSuccess, o.draining, o.remaining, o.drainDeadline} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: operations: %w", err)
		}
	}
	o.reloads.WithLabelValues("success")
	o.reloads.WithLabelValues("failure")
	return o, nil
}

// Loaded records the configuration loaded at start-up, at t (not counted as a reload).
func (o *Operations) Loaded(t time.Time) {
	o.lastOK.Set(1)
	o.lastSuccess.Set(float64(t.Unix()))
}

// Reloaded counts a reload at t; a failed one leaves the time of the last good load.
func (o *Operations) Reloaded(ok bool, t time.Time) {
	if !ok {
		o.reloads.WithLabelValues("failure").Inc()
		o.lastOK.Set(0)
		return
	}
	o.reloads.WithLabelValues("success").Inc()
	o.Loaded(t)
}

// Draining records a drain that started, with the allocations it waits for and its deadline.
func (o *Operations) Draining(remaining int, deadline time.Time) {
	o.draining.Set(1)
	o.remaining.Set(float64(remaining))
	o.drainDeadline.Set(float64(deadline.Unix()))
}

// Remaining updates the allocations a drain waits for.
func (o *Operations) Remaining(n int) { o.remaining.Set(float64(n)) }
