// Package stats holds the relay's Prometheus collectors, with the children the data path
// touches per packet resolved once, so counting a packet is an atomic add.
package stats

import (
	"strconv"

	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Drop is a reason a packet was discarded: the bounded label set of
// ferry_turn_dropped_packets_total.
type Drop uint8

// Drop reasons.
const (
	DropMalformed         Drop = iota // not STUN or ChannelData, or a short ChannelData (C09)
	DropBadFingerprint                // FINGERPRINT present and wrong (RFC 8489 §14.7)
	DropNoAllocation                  // data on a 5-tuple or relay socket without allocation
	DropNoChannel                     // ChannelData on an unbound channel
	DropNoPermission                  // data to or from a peer without permission
	DropPeerPort                      // a permitted IP, but a port the peer policy protects
	DropQueueFull                     // a bounded queue was full
	DropRateLimited                   // an unauthenticated answer over the per-source pace (C22)
	DropTooLarge                      // larger than the buffer: never relayed truncated
	DropWriteError                    // the kernel refused the send
	DropUnexpected                    // a response, or an indication that is not Send
	DropAmplification                 // an answer without credentials over 2× its request (C22)
	DropOverAllocationCap             // over the allocation's bandwidth cap
	DropOverUserCap                   // over the bandwidth cap of the allocation's user id
	DropOverServerCap                 // over the server-wide bandwidth cap
	numDrops
)

var dropLabels = [numDrops]string{"malformed", "bad_fingerprint", "no_allocation", "no_channel",
	"no_permission", "peer_port_denied", "control_queue_full", "rate_limited", "too_large",
	"write_error", "unexpected_message", "amplification", "allocation_bandwidth", "user_bandwidth",
	"server_bandwidth"}

// String returns the metric label.
func (d Drop) String() string { return dropLabels[d] }

// Directions of relayed traffic, the index of Traffic and of per-allocation counters.
const (
	ToPeer   = 0 // client to peer
	ToClient = 1 // peer to client
)

var directionLabels = [2]string{"client_to_peer", "peer_to_client"}

// Connection refusal reasons (ferry_turn_connections_refused_total).
const (
	RefusedPerIP      = "per_ip"
	RefusedTotal      = "total"
	RefusedHandshakes = "handshakes"
)

// Quota kinds (ferry_turn_quota_rejections_total).
const (
	QuotaUser        = "user"        // allocations of one user id: 486
	QuotaTotal       = "total"       // allocations in total: 486
	QuotaRelayPorts  = "relay_ports" // no free relay port: 508
	QuotaPermissions = "permissions" // permissions of one allocation: 508
	QuotaChannels    = "channels"    // channel bindings of one allocation: 508
)

// QuotaKinds are the label values of ferry_turn_quota_rejections_total.
var QuotaKinds = []string{QuotaUser, QuotaTotal, QuotaRelayPorts, QuotaPermissions, QuotaChannels}

// Auth failure reasons that exist before the first failure (the auth package's reasons).
var authReasons = []string{"malformed", "expired", "too_far_ahead", "unknown_user", "bad_integrity", "wrong_realm"}

// Traffic is the pair of per-packet counters of one transport and direction.
type Traffic struct {
	Bytes, Packets prometheus.Counter
}

// Relay holds every collector of the relay.
type Relay struct {
	Active       *prometheus.GaugeVec   // transport
	Created      *prometheus.CounterVec // transport
	Duration     prometheus.Histogram
	Permissions  prometheus.Gauge
	Channels     prometheus.Gauge
	Requests     *prometheus.CounterVec // method, result
	AuthFailures *prometheus.CounterVec // reason
	PeerDenials  *prometheus.CounterVec // reason
	Quota        *prometheus.CounterVec // kind
	Bindings     *prometheus.CounterVec // transport
	Limit        *prometheus.GaugeVec   // kind
	Bandwidth    *prometheus.GaugeVec   // scope
	ConnsRefused *prometheus.CounterVec // reason

	bytes, packets *prometheus.CounterVec
	dropped        *prometheus.CounterVec
	drops          [numDrops]prometheus.Counter
	traffic        [wire.NumTransports][2]Traffic
}

// nopCounter counts nothing: the per-packet counters when they are switched off.
type nopCounter struct{ prometheus.Counter }

func (nopCounter) Inc()        {}
func (nopCounter) Add(float64) {}

// New creates the collectors and registers them on reg. Without perPacket the relayed bytes
// and packets counters stay registered at zero (benchmarks that measure what counting costs).
func New(reg prometheus.Registerer, perPacket bool) (*Relay, error) {
	m := newCollectors()
	for _, c := range []prometheus.Collector{m.Active, m.Created, m.Duration, m.bytes, m.packets,
		m.Permissions, m.Channels, m.Requests, m.AuthFailures, m.PeerDenials, m.Quota, m.Bindings,
		m.dropped, m.Limit, m.Bandwidth, m.ConnsRefused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for t := range wire.NumTransports {
		m.Active.WithLabelValues(t.String())
		m.Created.WithLabelValues(t.String())
		m.Bindings.WithLabelValues(t.String())
		for d := range 2 {
			m.traffic[t][d] = Traffic{m.bytes.WithLabelValues(t.String(), directionLabels[d]),
				m.packets.WithLabelValues(t.String(), directionLabels[d])}
			if !perPacket {
				m.traffic[t][d] = Traffic{nopCounter{}, nopCounter{}}
			}
		}
	}
	for d := range numDrops {
		m.drops[d] = m.dropped.WithLabelValues(d.String())
	}
	// Known label values start at zero, so rate() and alerts see them before the first event.
	for _, r := range authReasons {
		m.AuthFailures.WithLabelValues(r)
	}
	for _, r := range policy.DenyReasons {
		m.PeerDenials.WithLabelValues(r)
	}
	for _, k := range QuotaKinds {
		m.Quota.WithLabelValues(k)
	}
	for _, r := range []string{RefusedPerIP, RefusedTotal, RefusedHandshakes} {
		m.ConnsRefused.WithLabelValues(r)
	}
	for _, meth := range []string{"binding", "allocate", "refresh", "create_permission", "channel_bind"} {
		m.Requests.WithLabelValues(meth, "success")
	}
	return m, nil
}

func newCollectors() *Relay {
	return &Relay{
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_turn_allocations_active",
			Help: "Allocations that exist now, by client transport.",
		}, []string{"transport"}),
		Created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_allocations_created_total",
			Help: "Allocations created, by client transport.",
		}, []string{"transport"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ferry_turn_allocation_duration_seconds",
			Help:    "How long ended allocations lived, in seconds.",
			Buckets: []float64{10, 30, 60, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200},
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_relayed_bytes_total",
			Help: "Application bytes relayed (payload only, no TURN framing), updated per packet.",
		}, []string{"transport", "direction"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_relayed_packets_total",
			Help: "Packets relayed, updated per packet.",
		}, []string{"transport", "direction"}),
		Permissions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_turn_permissions_active",
			Help: "Permissions installed now, over all allocations.",
		}),
		Channels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_turn_channel_bindings_active",
			Help: "Channel bindings installed now, over all allocations.",
		}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_requests_total",
			Help: "STUN/TURN requests answered, by method and result (success or the error code).",
		}, []string{"method", "result"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_auth_failures_total",
			Help: "Requests refused with 401 because their credentials failed, by reason.",
		}, []string{"reason"}),
		PeerDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_peer_denials_total",
			Help: "Permissions, channel bindings and connects refused by the peer policy, by reason.",
		}, []string{"reason"}),
		Quota: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_quota_rejections_total",
			Help: "Requests refused by a quota, by kind: user and total (Allocate, 486), relay_ports (Allocate, 508), permissions and channels (per allocation, 508).",
		}, []string{"kind"}),
		Bindings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_stun_binding_requests_total",
			Help: "STUN Binding requests answered, by client transport.",
		}, []string{"transport"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_dropped_packets_total",
			Help: "Packets discarded without relaying, by reason.",
		}, []string{"reason"}),
		ConnsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_connections_refused_total",
			Help: "TCP/TLS connections closed at once by the connection caps, by reason (per_ip, total, handshakes).",
		}, []string{"reason"}),
		Limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_turn_allocation_limit",
			Help: "Configured quotas by kind (total, per_user, permissions, channels); 0 means no cap.",
		}, []string{"kind"}),
		Bandwidth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_turn_bandwidth_limit_bits_per_second",
			Help: "Configured bandwidth caps by scope (allocation, user, server), in bits per second in each direction; 0 means no cap.",
		}, []string{"scope"}),
	}
}

// Drop counts one discarded packet.
func (m *Relay) Drop(reason Drop) { m.drops[reason].Inc() }

// DropN counts n discarded packets.
func (m *Relay) DropN(reason Drop, n int) { m.drops[reason].Add(float64(n)) }

// Traffic returns the per-packet counters of transport t, indexed by direction (ToPeer,
// ToClient). The pointer stays valid for the life of m.
func (m *Relay) Traffic(t wire.Transport) *[2]Traffic { return &m.traffic[t] }

// Result returns the label for a response: "success" or the error code.
func Result(code int) string {
	if code == 0 {
		return "success"
	}
	if code < 300 || code > 699 {
		return "other"
	}
	return strconv.Itoa(code)
}
