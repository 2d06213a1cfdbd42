package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Defaults of HeartbeatConfig.
const (
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultHeartbeatTTL      = 6 * time.Second
)

// Node is a relay's registry entry, as its heartbeat writes it (JSON in Redis).
type Node struct {
	ID      string `json:"id"`
	Region  string `json:"region,omitempty"`
	Version string `json:"version"`
	// URLs are the relay's public ICE server URLs, one per transport and port.
	URLs []NodeURL `json:"urls"`
	// Allocations are the live allocations; MaxAllocations the cap (0: none).
	Allocations    int `json:"allocations"`
	MaxAllocations int `json:"maxAllocations"`
	// RelayPorts are the relay ports in use of RelayPortsTotal (the fullest range).
	RelayPorts      int `json:"relayPorts"`
	RelayPortsTotal int `json:"relayPortsTotal"`
	// BytesPerSecond is the relayed traffic, both directions, over the last interval.
	BytesPerSecond float64 `json:"bytesPerSecond"`
	// Draining: the relay refuses new allocations (SIGTERM, ferry drain). Full: it is over
	// its readiness capacity (server.readiness_max_usage). Neither is handed out.
	Draining bool `json:"draining"`
	Full     bool `json:"full"`
	// Updated is when the entry was written, in Unix milliseconds.
	Updated int64 `json:"updated"`
}

// NodeURL is an ICE server URL of a Node.
type NodeURL struct {
	Scheme    string `json:"scheme"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	Transport string `json:"transport,omitempty"`
}

func nodeURLs(urls []signaling.URL) []NodeURL {
	out := make([]NodeURL, len(urls))
	for i, u := range urls {
		out[i] = NodeURL(u)
	}
	return out
}

func signalingURLs(urls []NodeURL) []signaling.URL {
	out := make([]signaling.URL, len(urls))
	for i, u := range urls {
		out[i] = signaling.URL(u)
	}
	return out
}

// Healthy reports whether the relay may be handed out: neither draining nor full.
func (n *Node) Healthy() bool { return !n.Draining && !n.Full }

// RelayState is what a relay's heartbeat reports about it now.
type RelayState struct {
	URLs                        []signaling.URL
	Allocations, MaxAllocations int
	RelayPorts, RelayPortsTotal int
	BytesPerSecond              float64
	Draining, Full              bool
}

// Member is a node that data-subject requests must reach: every node with an allocation
// log (relays and signaling instances alike), listed until its records are purged.
type Member struct {
	ID       string `json:"id"`
	Role     string `json:"role"`
	AdminURL string `json:"adminURL"`
	// LastSeen is the last heartbeat, RecordsUntil when the node's last records are purged
	// if it never comes back (LastSeen + its retention), both in Unix seconds.
	LastSeen     int64 `json:"lastSeen"`
	RecordsUntil int64 `json:"recordsUntil"`
}

// HeartbeatConfig configures a node's heartbeat.
type HeartbeatConfig struct {
	Client *redis.Client
	// ID, Region and Version describe the node (cluster.node_id, cluster.region, the build).
	ID, Region, Version string
	// Role is the node's server.role, for operators reading the member list.
	Role string
	// Relay, if not nil, reports the relay's state for its registry entry; nil for a node
	// without a relay (it is listed as a member only).
	Relay func() RelayState
	// AdminURL is where data-subject requests reach this node's admin listener.
	AdminURL string
	// Retention is how long this node keeps records after it stops (the allocation log's
	// retention plus its purge interval); 0 when it keeps none.
	Retention time.Duration
	// Interval and TTL: how often the entry is written, and how long it lives without a new
	// one. Zero: DefaultHeartbeatInterval, DefaultHeartbeatTTL.
	Interval, TTL time.Duration
	// Logger gets failures and recoveries (never addresses); nil: none.
	Logger *slog.Logger
	// Registerer, if not nil, gets ferry_cluster_heartbeats_total{result}.
	Registerer prometheus.Registerer
}

// Heartbeat writes a node's registry entry and membership every Interval until Close,
// which removes the registry entry so that ICE endpoints stop handing the relay out at once.
type Heartbeat struct {
	cfg    HeartbeatConfig
	beats  *prometheus.CounterVec
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex // serializes beats
	failed bool       // the last beat failed (mu)
}

// NewHeartbeat starts the heartbeat: the first beat is written before it returns (its
// failure is logged, not returned: Redis may come later).
func NewHeartbeat(cfg HeartbeatConfig) (*Heartbeat, error) {
	cfg.Interval = cmp.Or(cfg.Interval, DefaultHeartbeatInterval)
	cfg.TTL = cmp.Or(cfg.TTL, DefaultHeartbeatTTL)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "cluster")
	h := &Heartbeat{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{}),
		beats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_cluster_heartbeats_total",
			Help: "Registry heartbeats this node wrote to Redis, by result (ok, error).",
		}, []string{"result"})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(h.beats); err != nil {
			return nil, fmt.Errorf("cluster: heartbeat metrics: %w", err)
		}
	}
	h.beats.WithLabelValues("ok")
	h.beats.WithLabelValues("error")
	h.beat()
	go h.loop()
	return h, nil
}

func (h *Heartbeat) loop() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.beat()
		}
	}
}

// Beat writes the entry now (a drain announces itself at once rather than at the next tick).
func (h *Heartbeat) Beat() {
	select {
	case <-h.stop:
	default:
		h.beat()
	}
}

// beat writes the registry entry (relays) and the membership in one transaction.
func (h *Heartbeat) beat() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	c := h.cfg
	member, _ := json.Marshal(Member{ID: c.ID, Role: c.Role, AdminURL: c.AdminURL, LastSeen: now.Unix(),
		RecordsUntil: now.Add(c.Retention).Unix()})
	_, err := c.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, membersKey, c.ID, member)
		if c.Relay == nil {
			return nil
		}
		s := c.Relay()
		entry, err := json.Marshal(Node{ID: c.ID, Region: c.Region, Version: c.Version, URLs: nodeURLs(s.URLs),
			Allocations: s.Allocations, MaxAllocations: s.MaxAllocations, RelayPorts: s.RelayPorts,
			RelayPortsTotal: s.RelayPortsTotal, BytesPerSecond: s.BytesPerSecond, Draining: s.Draining,
			Full: s.Full, Updated: unixMilli(now)})
		if err != nil {
			return err
		}
		p.Set(ctx, relayKey+c.ID, entry, c.TTL)
		p.ZAdd(ctx, relaysKey, redis.Z{Score: float64(unixMilli(now.Add(c.TTL))), Member: c.ID})
		p.ZRemRangeByScore(ctx, relaysKey, "-inf", fmt.Sprint(unixMilli(now)))
		return nil
	})
	h.result(err)
}

// result counts a beat and logs a change between failing and working.
func (h *Heartbeat) result(err error) {
	if err != nil {
		h.beats.WithLabelValues("error").Inc()
		if !h.failed {
			h.cfg.Logger.Warn("cluster heartbeat failed: Redis cannot be written; this relay drops out of the registry until it can",
				"err", err)
		}
		h.failed = true
		return
	}
	h.beats.WithLabelValues("ok").Inc()
	if h.failed {
		h.cfg.Logger.Info("cluster heartbeat written again")
	}
	h.failed = false
}

// Close stops the heartbeat and removes the relay's registry entry (its membership stays
// until its records are purged). Idempotent.
func (h *Heartbeat) Close() error {
	var err error
	h.once.Do(func() {
		close(h.stop)
		<-h.done
		if h.cfg.Relay == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
		defer cancel()
		_, err = h.cfg.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, relayKey+h.cfg.ID)
			p.ZRem(ctx, relaysKey, h.cfg.ID)
			return nil
		})
		if err != nil {
			err = fmt.Errorf("cluster: remove the registry entry: %w", err)
		}
	})
	return err
}
