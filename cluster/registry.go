package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultRefresh is how often a Registry reads the relays' entries.
const DefaultRefresh = time.Second

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	Client *redis.Client
	// Refresh is how often the entries are read; zero: DefaultRefresh.
	Refresh time.Duration
	// Logger gets the registry's outages and recoveries (never addresses); nil: none.
	Logger *slog.Logger
	// Registerer, if not nil, gets ferry_cluster_relays{state}, ferry_cluster_registry_up and
	// ferry_cluster_ice_fallbacks_total{reason}.
	Registerer prometheus.Registerer
}

// Registry is an ICE endpoint's view of the relays: it reads their entries every Refresh in
// the background, so that picking a relay never waits on Redis. It implements
// signaling.RelayPicker. When Redis cannot be read, it picks nothing and the endpoint hands
// out its configured URLs (counted in ferry_cluster_ice_fallbacks_total, logged once per
// outage) until a read succeeds again.
type Registry struct {
	cfg       RegistryConfig
	view      atomic.Pointer[view] // nil while Redis cannot be read
	fallbacks *prometheus.CounterVec
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
	failed    bool // owned by the loop
	// refreshed is signalled after every read (tests wait on it).
	refreshed chan struct{}
}

// view is one read of the registry.
type view struct {
	nodes []*Node // sorted by id
	mu    sync.Mutex
	picks map[string]int // handed out since this read: the load not yet in the entries
	turn  uint64         // breaks ties between equally loaded relays, in turn
}

// Fallback reasons.
const (
	fallbackUnreachable = "unreachable" // Redis cannot be read
	fallbackNoRelay     = "no_relay"    // no healthy relay is registered
)

// NewRegistry reads the registry once and keeps reading it until Close.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	cfg.Refresh = cmp.Or(cfg.Refresh, DefaultRefresh)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "cluster")
	r := &Registry{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{}), refreshed: make(chan struct{}, 1),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_cluster_ice_fallbacks_total",
			Help: "ICE server answers that carried the configured URLs instead of a registered relay's, by reason (unreachable: Redis cannot be read; no_relay: no healthy relay registered).",
		}, []string{"reason"})}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.fallbacks, registryGauges{r}} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("cluster: registry metrics: %w", err)
			}
		}
	}
	r.fallbacks.WithLabelValues(fallbackUnreachable)
	r.fallbacks.WithLabelValues(fallbackNoRelay)
	r.refresh()
	go r.loop()
	return r, nil
}

func (r *Registry) loop() {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.refresh()
		}
	}
}

// refresh reads every live entry: the ids from the sorted set, then the entries.
func (r *Registry) refresh() {
	defer func() {
		select {
		case r.refreshed <- struct{}{}:
		default:
		}
	}()
	nodes, err := ReadRelays(context.Background(), r.cfg.Client)
	if err != nil {
		r.view.Store(nil)
		if !r.failed {
			r.cfg.Logger.Warn("cluster registry cannot be read: ICE answers carry the configured URLs until it can",
				"err", err)
		}
		r.failed = true
		return
	}
	if r.failed {
		r.cfg.Logger.Info("cluster registry read again: ICE answers pick registered relays", "relays", len(nodes))
	}
	r.failed = false
	r.view.Store(&view{nodes: nodes, picks: map[string]int{}})
}

// ReadRelays returns the live relay entries, sorted by id.
func ReadRelays(ctx context.Context, c *redis.Client) ([]*Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*commandTimeout)
	defer cancel()
	now := strconv.FormatInt(unixMilli(time.Now()), 10)
	ids, err := c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: relaysKey, ByScore: true, Start: "(" + now, Stop: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = relayKey + id
	}
	vals, err := c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired between the two reads
		}
		n := new(Node)
		if json.Unmarshal([]byte(s), n) == nil && n.ID != "" && len(n.URLs) > 0 {
			nodes = append(nodes, n)
		}
	}
	slices.SortFunc(nodes, func(a, b *Node) int { return cmp.Compare(a.ID, b.ID) })
	return nodes, nil
}

// PickRelay implements signaling.RelayPicker. Among the healthy relays (not draining, not
// full) of region (all healthy relays when none is in region), affinity picks by
// rendezvous hashing, so that every instance picks the same relay for the same room and a
// relay that goes away moves only its own rooms; without affinity it picks the least loaded
// relay (allocations reported plus those handed out since the last read, relative to
// relay.max_allocations where every relay has one), equally loaded relays in turn.
func (r *Registry) PickRelay(region, affinity string) ([]signaling.URL, bool) {
	v := r.view.Load()
	if v == nil {
		r.fallbacks.WithLabelValues(fallbackUnreachable).Inc()
		return nil, false
	}
	n := v.pick(region, affinity)
	if n == nil {
		r.fallbacks.WithLabelValues(fallbackNoRelay).Inc()
		return nil, false
	}
	return signalingURLs(n.URLs), true
}

func (v *view) pick(region, affinity string) *Node {
	var healthy, local []*Node
	for _, n := range v.nodes {
		if n.Healthy() {
			healthy = append(healthy, n)
			if region != "" && n.Region == region {
				local = append(local, n)
			}
		}
	}
	if len(local) > 0 {
		healthy = local
	}
	if len(healthy) == 0 {
		return nil
	}
	if affinity != "" {
		return rendezvous(healthy, affinity)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	ratio := !slices.ContainsFunc(healthy, func(n *Node) bool { return n.MaxAllocations <= 0 })
	load := func(n *Node) float64 {
		l := float64(n.Allocations + v.picks[n.ID])
		if ratio {
			l /= float64(n.MaxAllocations)
		}
		return l
	}
	var least []*Node
	for _, n := range healthy {
		switch {
		case len(least) == 0 || load(n) < load(least[0]):
			least = append(least[:0], n)
		case load(n) == load(least[0]):
			least = append(least, n)
		}
	}
	n := least[v.turn%uint64(len(least))]
	v.turn++
	v.picks[n.ID]++
	return n
}

// rendezvous returns the node with the highest hash of (key, node id).
func rendezvous(nodes []*Node, key string) *Node {
	var best *Node
	var bestScore uint64
	for _, n := range nodes {
		h := fnv.New64a()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write([]byte(n.ID))
		if s := h.Sum64(); best == nil || s > bestScore {
			best, bestScore = n, s
		}
	}
	return best
}

// Relays returns the entries of the last read; ok is false when Redis could not be read.
func (r *Registry) Relays() (nodes []Node, ok bool) {
	v := r.view.Load()
	if v == nil {
		return nil, false
	}
	for _, n := range v.nodes {
		nodes = append(nodes, *n)
	}
	return nodes, true
}

// Close stops reading. Idempotent.
func (r *Registry) Close() error {
	r.once.Do(func() {
		close(r.stop)
		<-r.done
	})
	return nil
}

// registryGauges reports the relays by state at scrape time. No label names a node: the
// number of nodes is not bounded by this node's configuration.
type registryGauges struct{ r *Registry }

var (
	relaysDesc = prometheus.NewDesc("ferry_cluster_relays",
		"Relays in the cluster registry as this ICE endpoint last read it, by state: healthy (handed out), draining, full (over its readiness capacity).",
		[]string{"state"}, nil)
	registryUpDesc = prometheus.NewDesc("ferry_cluster_registry_up",
		"1 when the last read of the cluster registry in Redis worked, 0 when ICE answers fall back to the configured URLs.", nil, nil)
)

func (g registryGauges) Describe(ch chan<- *prometheus.Desc) { ch <- relaysDesc; ch <- registryUpDesc }

func (g registryGauges) Collect(ch chan<- prometheus.Metric) {
	var healthy, draining, full float64
	v := g.r.view.Load()
	up := 0.0
	if v != nil {
		up = 1
		for _, n := range v.nodes {
			switch {
			case n.Draining:
				draining++
			case n.Full:
				full++
			default:
				healthy++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(registryUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(relaysDesc, prometheus.GaugeValue, healthy, "healthy")
	ch <- prometheus.MustNewConstMetric(relaysDesc, prometheus.GaugeValue, draining, "draining")
	ch <- prometheus.MustNewConstMetric(relaysDesc, prometheus.GaugeValue, full, "full")
}
