package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/cluster"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/metrics"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// clusterNode is this node's part in a cluster: its heartbeat (registry entry and
// membership), the registry an ICE endpoint picks relays from, and rooms in Redis.
type clusterNode struct {
	id        string
	client    *redis.Client
	heartbeat *cluster.Heartbeat
	registry  *cluster.Registry // nil without the signaling listener
	rooms     *cluster.Rooms    // nil without rooms; the handler closes it
}

// startCluster connects to Redis when cluster.redis_url is set, starts the heartbeat and,
// for a signaling node, the registry reader. Redis being down is no reason not to start:
// the heartbeat and the registry log it and recover by themselves.
func (st *startup) startCluster(ctx context.Context) error {
	f := st.f
	if !f.Cluster.Enabled() {
		return nil
	}
	id, err := nodeID(f)
	if err != nil {
		return err
	}
	client, err := cluster.NewClient(f.Cluster.RedisURL, f.Cluster.RedisPassword)
	if err != nil {
		return err
	}
	// go-redis logs connection failures itself (the process's only Redis client is this
	// one): into Ferry's log at debug; the registry and rooms say what an outage means.
	redis.SetLogger(redisLog{st.log.With("component", "redis")})
	cn := &clusterNode{id: id, client: client}
	st.undo = append(st.undo, func() { _ = cn.close() })
	if err := cluster.Ping(ctx, client); err != nil {
		st.log.Warn("cluster: Redis does not answer yet; carrying on, it is tried again every heartbeat", "err", err)
	}
	retention := time.Duration(0)
	if f.AllocLog.Enabled {
		retention = f.AllocLog.Retention + f.AllocLog.PurgeInterval
	}
	hb := cluster.HeartbeatConfig{Client: client, ID: id, Region: f.Cluster.Region,
		Version: metrics.ReadBuildInfo().Version, Role: f.Server.Role, AdminURL: clusterAdminURL(f, st.s.socks, st.ips.bind4, st.ips.adv4),
		Retention: retention, Interval: f.Cluster.HeartbeatInterval, TTL: f.Cluster.HeartbeatTTL,
		Logger: st.log, Registerer: st.reg}
	if st.relaySrv != nil {
		hb.Relay = st.relayState()
	}
	if cn.heartbeat, err = cluster.NewHeartbeat(hb); err != nil {
		return err
	}
	if f.RunsSignaling() && st.s.socks.http != nil {
		if cn.registry, err = cluster.NewRegistry(cluster.RegistryConfig{Client: client, Logger: st.log,
			Registerer: st.reg}); err != nil {
			return err
		}
	}
	st.s.cluster = cn
	st.log.Info("cluster: on", "node", id, "region", f.Cluster.Region, "role", f.Server.Role)
	return nil
}

// nodeID is cluster.node_id, else the host name (its first label).
func nodeID(f *config.File) (string, error) {
	if f.Cluster.NodeID != "" {
		return f.Cluster.NodeID, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cluster.node_id: empty, and no host name to use: %w", err)
	}
	host, _, _ = strings.Cut(host, ".")
	if !config.ValidNodeID(host) {
		return "", fmt.Errorf("cluster.node_id: empty, and the host name %q is no node id (A-Z a-z 0-9 . _ -): set one", host)
	}
	return host, nil
}

// clusterAdminURL is how other nodes reach this node's admin listener: cluster.admin_url, or
// the admin listener's address, with the public host for an unspecified one.
func clusterAdminURL(f *config.File, socks *sockets, bind4, adv4 netip.Addr) string {
	if f.Cluster.AdminURL != "" {
		return strings.TrimSuffix(f.Cluster.AdminURL, "/")
	}
	if socks.admin == nil {
		return ""
	}
	host, port, _ := net.SplitHostPort(socks.admin.Addr().String())
	if ip, err := netip.ParseAddr(host); err != nil || ip.IsUnspecified() {
		host = publicHost(f, bind4, adv4)
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}).String()
}

// relayState reports the relay for its registry entry: usage, drain, readiness and the
// relayed bytes per second since the last heartbeat.
func (st *startup) relayState() func() cluster.RelayState {
	srv, s, reg, urls := st.relaySrv, st.s, st.reg, st.ownURLs()
	var lastBytes float64
	var lastAt time.Time
	return func() cluster.RelayState {
		u := srv.Usage()
		ready, why := s.readiness()
		rs := cluster.RelayState{URLs: urls, Allocations: u.Allocations, MaxAllocations: u.MaxAllocations,
			RelayPorts: u.RelayPorts, RelayPortsTotal: u.RelayPortsTotal,
			Draining: srv.Draining() || s.draining.Load(), Full: !ready && why == "capacity"}
		now, b := time.Now(), relayedBytes(reg)
		if !lastAt.IsZero() && now.After(lastAt) && b >= lastBytes {
			rs.BytesPerSecond = (b - lastBytes) / now.Sub(lastAt).Seconds()
		}
		lastBytes, lastAt = b, now
		return rs
	}
}

// relayedBytes sums ferry_turn_relayed_bytes_total (both directions).
func relayedBytes(g prometheus.Gatherer) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "ferry_turn_relayed_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// ownURLs are the ICE server URLs of this node's TURN listeners.
func (st *startup) ownURLs() []signaling.URL {
	if st.urls == nil {
		udp, tcp, tls := st.s.socks.addrs()
		st.urls = signaling.BuildURLs(publicHost(st.f, st.ips.bind4, st.ips.adv4), portsOf(udp), portsOf(tcp), portsOf(tls))
	}
	return st.urls
}

// iceURLs are what the signaling listener hands out without a registry (or when it cannot
// be read): http.ice_urls, else this node's own listeners.
func (st *startup) iceURLs() []signaling.URL {
	if len(st.f.HTTP.ICEURLs) > 0 {
		return iceURLsOf(st.f)
	}
	return st.ownURLs()
}

// iceURLsOf maps http.ice_urls onto signaling's URLs.
func iceURLsOf(f *config.File) []signaling.URL {
	var out []signaling.URL
	for _, u := range f.ICEURLs() {
		out = append(out, signaling.URL(u))
	}
	return out
}

// picker is the relay picker of the signaling handler: the registry, or nil.
func (cn *clusterNode) picker() signaling.RelayPicker {
	if cn == nil || cn.registry == nil {
		return nil
	}
	return cn.registry
}

// newRooms returns rooms in Redis with the limits of cfg.
func (cn *clusterNode) newRooms(cfg signaling.MemoryRoomsConfig, log *slog.Logger) (signaling.Rooms, error) {
	r, err := cluster.NewRooms(cluster.RoomsConfig{Client: cn.client, Node: cn.id, Limits: cfg, Logger: log,
		Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	cn.rooms = r
	return r, nil
}

// beat writes the heartbeat now (a drain begins).
func (cn *clusterNode) beat() {
	if cn != nil {
		cn.heartbeat.Beat()
	}
}

// closeHeartbeat removes this relay from the registry.
func (cn *clusterNode) closeHeartbeat() error {
	if cn.heartbeat == nil {
		return nil
	}
	return cn.heartbeat.Close()
}

// close stops the registry reader and closes the Redis client (after the handler closed
// the rooms).
func (cn *clusterNode) close() error {
	var errs []error
	if cn.heartbeat != nil {
		errs = append(errs, cn.heartbeat.Close())
	}
	if cn.registry != nil {
		errs = append(errs, cn.registry.Close())
	}
	if err := cn.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// redisLog routes go-redis's own messages into Ferry's log, at debug level.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}
