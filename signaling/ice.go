package signaling

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// Transport names accepted in the transports parameter.
const (
	TransportUDP = "udp"
	TransportTCP = "tcp"
	TransportTLS = "tls"
)

// URL is one ICE server URL (RFC 7064 stun:, RFC 7065 turn:/turns:).
type URL struct {
	Scheme    string // "stun", "turn" or "turns"
	Host      string // host name or IP (IPv6 without brackets)
	Port      int
	Transport string // TransportUDP, TransportTCP or TransportTLS; "" for stun:
}

// String renders the URL, e.g. "turn:turn.example.org:3478?transport=udp" or
// "turns:[2001:db8::1]:443?transport=tcp".
func (u URL) String() string {
	host := u.Host
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		host = "[" + host + "]"
	}
	s := u.Scheme + ":" + host + ":" + strconv.Itoa(u.Port)
	switch u.Transport {
	case TransportUDP:
		s += "?transport=udp"
	case TransportTCP, TransportTLS:
		s += "?transport=tcp" // turns: is TLS over TCP (RFC 7065 §3)
	}
	return s
}

// BuildURLs returns the ICE server URLs of running listeners: one stun: URL (first UDP
// port), and turn:/turns: URLs for every UDP, TCP and TLS port, deduplicated, in that order.
func BuildURLs(host string, udpPorts, tcpPorts, tlsPorts []int) []URL {
	var urls []URL
	seen := map[URL]bool{}
	add := func(u URL) {
		if !seen[u] {
			seen[u] = true
			urls = append(urls, u)
		}
	}
	if len(udpPorts) > 0 {
		add(URL{Scheme: "stun", Host: host, Port: udpPorts[0]})
	}
	for _, p := range udpPorts {
		add(URL{Scheme: "turn", Host: host, Port: p, Transport: TransportUDP})
	}
	for _, p := range tcpPorts {
		add(URL{Scheme: "turn", Host: host, Port: p, Transport: TransportTCP})
	}
	for _, p := range tlsPorts {
		add(URL{Scheme: "turns", Host: host, Port: p, Transport: TransportTLS})
	}
	return urls
}

func urlStrings(urls []URL) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = u.String()
	}
	return out
}

// ICEServer is one RTCIceServer entry of RTCConfiguration.iceServers (W3C WebRTC §4.2.4):
// its URLs, and for TURN the REST username and password as username and credential.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// RTCConfiguration is what /v1/ice-servers answers by default and `ferry credentials --json`
// prints: an RTCConfiguration dictionary (W3C WebRTC §4.2.1) that browsers take as it is,
// with the credential's lifetime in seconds (ttl) and its expiry (expiresAt, RFC 3339 UTC).
type RTCConfiguration struct {
	ICEServers         []ICEServer `json:"iceServers"`
	ICETransportPolicy string      `json:"iceTransportPolicy,omitempty"` // "all" or "relay"; "" leaves the browser's default
	TTL                int64       `json:"ttl"`
	ExpiresAt          string      `json:"expiresAt"`
}

// NewRTCConfiguration returns the ICE servers of urls with credential c: the stun: URLs in
// one entry without credentials (STUN needs none), then the turn: and turns: URLs in one
// entry with c. An entry without URLs is left out.
func NewRTCConfiguration(urls []URL, c auth.Credential) RTCConfiguration {
	stun, turn := splitURLs(urls)
	servers := []ICEServer{}
	if len(stun) > 0 {
		servers = append(servers, ICEServer{URLs: urlStrings(stun)})
	}
	if len(turn) > 0 {
		servers = append(servers, ICEServer{URLs: urlStrings(turn), Username: c.Username, Credential: c.Password})
	}
	return RTCConfiguration{ICEServers: servers, TTL: int64(c.TTL / time.Second),
		ExpiresAt: c.Expires.UTC().Format(time.RFC3339)}
}

// splitURLs separates stun: URLs from turn: and turns: URLs, keeping their order.
func splitURLs(urls []URL) (stun, turn []URL) {
	for _, u := range urls {
		if u.Scheme == "stun" {
			stun = append(stun, u)
		} else {
			turn = append(turn, u)
		}
	}
	return stun, turn
}

// RelayPicker chooses the relay whose ICE server URLs an answer hands out: a cluster's
// registry of relays (package cluster).
type RelayPicker interface {
	// PickRelay returns the URLs of one healthy relay. region ("" for none) prefers the
	// relays of that region; affinity ("" for none) gives every caller with the same value
	// the same relay while it stays healthy (a room id: both participants on one relay). It
	// must not block on the network. ok is false when it cannot pick (the registry cannot be
	// read, or lists no healthy relay): the caller then hands out its configured URLs.
	PickRelay(region, affinity string) (urls []URL, ok bool)
}

// relayURLs are the URLs an answer hands out: the picked relay's, else Config.URLs.
func (h *Handler) relayURLs(region, affinity string) []URL {
	if h.cfg.Relays != nil {
		if urls, ok := h.cfg.Relays.PickRelay(region, affinity); ok {
			return urls
		}
	}
	return h.cfg.URLs
}

// validRegion reports whether s can be a region hint: 1-64 of A-Z a-z 0-9 . _ -.
func validRegion(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}
