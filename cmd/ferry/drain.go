package main

import (
	"context"
	"os"
	"syscall"
	"time"
)

// drainReportInterval is how often a drain logs (and exports) the allocations it waits for.
const drainReportInterval = 30 * time.Second

// drainPoll is how often a drain looks whether the last allocation has ended.
const drainPoll = 250 * time.Millisecond

// run serves until it is time to stop: SIGINT, a second SIGTERM (or SIGINT) during a drain,
// the end of a drain, or the end of ctx. SIGHUP reloads the configuration at any time, a
// drain included; SIGTERM and an admin POST /-/drain start a drain.
func (s *server) run(ctx context.Context, sigs <-chan os.Signal) {
	var d *drain
	defer func() {
		if d != nil {
			d.stop()
		}
	}()
	for {
		var poll, report, deadline <-chan time.Time
		if d != nil {
			poll, report, deadline = d.poll.C, d.report.C, d.deadline.C
		}
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				_, _ = s.reload()
			case d != nil:
				s.log.Warn("second signal during the drain: stopping now", "signal", sig.String(),
					"allocations", s.relay.AllocationCount())
				return
			case sig == syscall.SIGTERM:
				if d = s.startDrain("SIGTERM"); d == nil {
					return
				}
			default:
				s.log.Info("stopping now", "signal", sig.String(), "allocations", s.relay.AllocationCount())
				return
			}
		case <-s.drainReq:
			if d == nil {
				if d = s.startDrain("ferry drain"); d == nil {
					return
				}
			}
		case <-poll:
			if s.relay.AllocationCount() == 0 {
				s.log.Info("drained: the last allocation has ended", "took", time.Since(d.began).Round(time.Second).String())
				return
			}
		case <-report:
			n := s.relay.AllocationCount()
			s.ops.Remaining(n)
			s.log.Info("draining", "allocations", n, "stopping_in", time.Until(d.until).Round(time.Second).String())
		case <-deadline:
			s.log.Warn("drain timeout (server.drain_timeout): ending the remaining allocations",
				"allocations", s.relay.AllocationCount())
			return
		}
	}
}

// drain is a drain in progress.
type drain struct {
	began, until time.Time
	poll, report *time.Ticker
	deadline     *time.Timer
}

func (d *drain) stop() {
	d.poll.Stop()
	d.report.Stop()
	d.deadline.Stop()
}

// startDrain stops taking new work: /readyz answers 503, new Allocates get 508 and new
// rooms are refused, while existing allocations and rooms go on. It returns nil when there
// is nothing to wait for (no allocation, or server.drain_timeout 0): stop now.
func (s *server) startDrain(why string) *drain {
	timeout := s.conf.Load().Server.DrainTimeout
	s.draining.Store(true)
	s.relay.SetDraining(true)
	if s.api != nil {
		s.api.SetDraining(true)
	}
	s.cluster.beat() // the registry learns at once: ICE endpoints stop handing this relay out
	n := s.relay.AllocationCount()
	if n == 0 || timeout <= 0 {
		s.log.Info("stopping: nothing to drain", "by", why, "allocations", n)
		return nil
	}
	d := &drain{began: time.Now(), poll: time.NewTicker(drainPoll), report: time.NewTicker(s.drainReport),
		deadline: time.NewTimer(timeout)}
	d.until = d.began.Add(timeout)
	s.ops.Draining(n, d.until)
	s.log.Info("draining: new allocations get 508 and new rooms are refused; running calls go on. "+
		"Ferry stops when the last allocation ends or at the drain timeout; SIGTERM or SIGINT again stops now",
		"by", why, "allocations", n, "drain_timeout", timeout.String())
	return d
}

// readiness is /readyz on both listeners: not ready while stopping or draining, or when
// server.readiness_max_usage of relay.max_allocations or of a relay port range is in use.
func (s *server) readiness() (bool, string) {
	switch {
	case s.stopping.Load() || !s.relay.Ready():
		return false, "stopping"
	case s.draining.Load():
		return false, "draining"
	}
	share := s.conf.Load().Server.ReadinessMaxUsage
	if share <= 0 {
		return true, ""
	}
	u := s.relay.Usage()
	if u.MaxAllocations > 0 && float64(u.Allocations) >= share*float64(u.MaxAllocations) ||
		u.RelayPortsTotal > 0 && float64(u.RelayPorts) >= share*float64(u.RelayPortsTotal) {
		return false, "capacity"
	}
	return true, ""
}
