package signaling

import (
	"net/netip"
	"strconv"
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
