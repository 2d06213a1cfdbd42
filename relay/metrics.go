package relay

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Transport is a client transport: how the client reaches Ferry (the 5-tuple's protocol).
type Transport uint8

// Client transports.
const (
	UDP Transport = iota
	TCP
	TLS
	numTransports
)

// String returns the metric label: "udp", "tcp" or "tls".
func (t Transport) String() string {
	switch t {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	case TLS:
		return "tls"
	}
	return "unknown"
}

// Drop reasons, the bounded label set of ferry_turn_dropped_packets_total.
const (
	dropMalformed      = "malformed"
	dropBadFingerprint = "bad_fingerprint"
	dropNoAllocation   = "no_allocation"
	dropNoChannel      = "no_channel"
	dropNoPermission   = "no_permission"
	dropPeerPort       = "peer_port_denied"
	dropQueueFull      = "control_queue_full"
	dropRateLimited    = "rate_limited"
	dropTooLarge       = "too_large"
	dropWriteError     = "write_error"
	dropUnexpected     = "unexpected_message"
)

var dropReasons = []string{dropMalformed, dropBadFingerprint, dropNoAllocation, dropNoChannel,
	dropNoPermission, dropPeerPort, dropQueueFull, dropRateLimited, dropTooLarge, dropWriteError,
	dropUnexpected}

// direction indexes: client_to_peer, peer_to_client.
const (
	toPeer = iota
	toClient
)

var directionLabels = [2]string{"client_to_peer", "peer_to_client"}

// relayMetrics holds every collector of the relay. Hot-path children are resolved once, so a
// relayed packet costs atomic adds only.
type relayMetrics struct {
	active        *prometheus.GaugeVec
	created       *prometheus.CounterVec
	duration      prometheus.Histogram
	bytes         *prometheus.CounterVec
	packets       *prometheus.CounterVec
	permissions   prometheus.Gauge
	channels      prometheus.Gauge
	requests      *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
	peerDenials   *prometheus.CounterVec
	quota         *prometheus.CounterVec
	bindings      *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	droppedByName map[string]prometheus.Counter
	limit         *prometheus.GaugeVec
	connsRefused  *prometheus.CounterVec

	// resolved children, indexed [transport][direction]
	bytesC   [numTransports][2]prometheus.Counter
	packetsC [numTransports][2]prometheus.Counter
}

// nopCounter counts nothing: the per-packet counters when metrics are disabled.
type nopCounter struct{ prometheus.Counter }

func (nopCounter) Inc()        {}
func (nopCounter) Add(float64) {}

func newRelayMetrics(reg prometheus.Registerer, perPacket bool) (*relayMetrics, error) {
	m := &relayMetrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_turn_allocations_active",
			Help: "Allocations that exist now, by client transport.",
		}, []string{"transport"}),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_allocations_created_total",
			Help: "Allocations created, by client transport.",
		}, []string{"transport"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
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
		permissions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_turn_permissions_active",
			Help: "Permissions installed now, over all allocations.",
		}),
		channels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_turn_channel_bindings_active",
			Help: "Channel bindings installed now, over all allocations.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_requests_total",
			Help: "STUN/TURN requests answered, by method and result (success or the error code).",
		}, []string{"method", "result"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_auth_failures_total",
			Help: "Requests refused with 401 because their credentials failed, by reason.",
		}, []string{"reason"}),
		peerDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_peer_denials_total",
			Help: "Permissions, channel bindings and connects refused by the peer policy, by reason.",
		}, []string{"reason"}),
		quota: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_quota_rejections_total",
			Help: "Allocate requests refused with 486, by quota kind (user, total).",
		}, []string{"kind"}),
		bindings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_stun_binding_requests_total",
			Help: "STUN Binding requests answered, by client transport.",
		}, []string{"transport"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_dropped_packets_total",
			Help: "Packets discarded without relaying, by reason.",
		}, []string{"reason"}),
		droppedByName: map[string]prometheus.Counter{},
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_turn_connections_refused_total",
			Help: "TCP/TLS connections closed at once by the connection caps, by reason (per_ip, total, handshakes).",
		}, []string{"reason"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_turn_allocation_limit",
			Help: "Configured allocation caps by kind (total, per_user); 0 means no cap.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.active, m.created, m.duration, m.bytes, m.packets,
		m.permissions, m.channels, m.requests, m.authFailures, m.peerDenials, m.quota, m.bindings,
		m.dropped, m.limit, m.connsRefused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for t := Transport(0); t < numTransports; t++ {
		m.active.WithLabelValues(t.String())
		m.created.WithLabelValues(t.String())
		m.bindings.WithLabelValues(t.String())
		for d := range 2 {
			m.bytesC[t][d] = m.bytes.WithLabelValues(t.String(), directionLabels[d])
			m.packetsC[t][d] = m.packets.WithLabelValues(t.String(), directionLabels[d])
			if !perPacket {
				m.bytesC[t][d], m.packetsC[t][d] = nopCounter{}, nopCounter{}
			}
		}
	}
	for _, r := range dropReasons {
		m.droppedByName[r] = m.dropped.WithLabelValues(r)
	}
	// Known label values start at zero, so rate() and alerts see them before the first event.
	for _, r := range []string{"malformed", "expired", "too_far_ahead", "unknown_user", "bad_integrity", "wrong_realm"} {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range denyReasons {
		m.peerDenials.WithLabelValues(r)
	}
	for _, k := range []string{"total", "user"} {
		m.quota.WithLabelValues(k)
	}
	for _, r := range []string{refusedPerIP, refusedTotal, refusedHandshakes} {
		m.connsRefused.WithLabelValues(r)
	}
	for _, meth := range []uint16{methodBinding, methodAllocate, methodRefresh, methodCreatePermission, methodChannelBind} {
		m.requests.WithLabelValues(methodLabel(meth), "success")
	}
	return m, nil
}

// drop counts a discarded packet. reason must be one of dropReasons.
func (m *relayMetrics) drop(reason string) { m.droppedByName[reason].Inc() }

// requestResult returns the label for a response: "success" or the error code.
func requestResult(code int) string {
	if code == 0 {
		return "success"
	}
	if code < 300 || code > 699 {
		return "other"
	}
	return strconv.Itoa(code)
}
