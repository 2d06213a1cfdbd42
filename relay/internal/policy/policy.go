// Package policy decides which peer addresses a relay may reach (RFC 8656 §21): the
// default deny list of special-purpose ranges, the operator's allow and deny lists, and the
// relay-to-relay rule for Ferry's own relayed addresses.
package policy

import "net/netip"

// Peer denial reasons, the bounded label set of ferry_turn_peer_denials_total.
const (
	DenyInvalid        = "invalid"
	DenyUnspecified    = "unspecified"
	DenyLoopback       = "loopback"
	DenyPrivate        = "private"
	DenyCGNAT          = "cgnat"
	DenyLinkLocal      = "link_local"
	DenyUniqueLocal    = "unique_local"
	DenySiteLocal      = "site_local"
	DenyMulticast      = "multicast"
	DenyBroadcast      = "broadcast"
	DenyReserved       = "reserved"
	DenyDocumentation  = "documentation"
	DenyIPv4Embedding  = "ipv4_embedding"
	DenyConfigured     = "configured"
	DenyOwnAddress     = "own_address"
	DenyNotRelayedAddr = "not_relayed_address"
	DenyServicePort    = "service_port"
)

// DenyReasons lists every denial reason, for metrics that start at zero.
var DenyReasons = []string{DenyInvalid, DenyUnspecified, DenyLoopback, DenyPrivate, DenyCGNAT,
	DenyLinkLocal, DenyUniqueLocal, DenySiteLocal, DenyMulticast, DenyBroadcast, DenyReserved,
	DenyDocumentation, DenyIPv4Embedding, DenyConfigured, DenyOwnAddress, DenyNotRelayedAddr, DenyServicePort}

// Class says how a permitted peer IP may be used on the data path; 0 means denied.
type Class uint8

const (
	// Open: any port.
	Open Class = iota + 1
	// RelayOnly: one of Ferry's relayed IPs; only ports of active relayed transport
	// addresses may be reached (relay-to-relay calls, C06), never Ferry's other ports.
	RelayOnly
	// Local: an explicitly allowed address on this host; Ferry's own service ports
	// (TURN listeners, HTTP, admin) stay unreachable.
	Local
)

type rangeRule struct {
	prefix netip.Prefix
	reason string
}

// defaultDenied lists the ranges a relay must not reach unless an operator allows them
// (RFC 8656 §21, RFC 6890 special-purpose registries). More specific prefixes come first,
// so the first match names the reason. IPv4-mapped IPv6 never reaches this list: Check
// unmaps first, so "::ffff:127.0.0.1" is judged as 127.0.0.1 (C02).
var defaultDenied = mustRules(
	// IPv4
	"0.0.0.0/8", DenyUnspecified,
	"127.0.0.0/8", DenyLoopback,
	"10.0.0.0/8", DenyPrivate,
	"172.16.0.0/12", DenyPrivate,
	"192.168.0.0/16", DenyPrivate,
	"100.64.0.0/10", DenyCGNAT,
	"169.254.0.0/16", DenyLinkLocal,
	"192.0.0.0/24", DenyReserved,
	"192.0.2.0/24", DenyDocumentation,
	"198.51.100.0/24", DenyDocumentation,
	"203.0.113.0/24", DenyDocumentation,
	"192.88.99.0/24", DenyReserved,
	"198.18.0.0/15", DenyReserved,
	"224.0.0.0/4", DenyMulticast,
	"255.255.255.255/32", DenyBroadcast,
	"240.0.0.0/4", DenyReserved,
	// IPv6
	"::/128", DenyUnspecified,
	"::1/128", DenyLoopback,
	"::/96", DenyIPv4Embedding, // IPv4-compatible (deprecated): ::a.b.c.d
	"::ffff:0:0:0/96", DenyIPv4Embedding, // IPv4-translated (RFC 2765): ::ffff:0:a.b.c.d
	"64:ff9b::/96", DenyIPv4Embedding, // NAT64 well-known prefix reaches IPv4 space
	"64:ff9b:1::/48", DenyIPv4Embedding, // NAT64 local-use
	"2002::/16", DenyIPv4Embedding, // 6to4 embeds an IPv4 address
	"2001::/32", DenyIPv4Embedding, // Teredo embeds an IPv4 address
	"2001:db8::/32", DenyDocumentation,
	"3fff::/20", DenyDocumentation,
	"2001::/23", DenyReserved, // IETF protocol assignments (benchmarking, ORCHID, ...)
	"100::/64", DenyReserved, // discard-only
	"5f00::/16", DenyReserved, // SRv6 SIDs
	"fe80::/10", DenyLinkLocal,
	"fec0::/10", DenySiteLocal,
	"fc00::/7", DenyUniqueLocal,
	"ff00::/8", DenyMulticast,
)

func mustRules(kv ...string) []rangeRule {
	rules := make([]rangeRule, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		rules = append(rules, rangeRule{netip.MustParsePrefix(kv[i]), kv[i+1]})
	}
	return rules
}

// Policy decides which peer IP addresses an allocation may get a permission, channel
// binding or TCP connection for (RFC 8656 §10.2, §12.2; RFC 6062 §5.2). It is immutable and
// safe for concurrent use.
//
// Order of evaluation, first match wins:
//  1. an invalid address is denied;
//  2. one of Ferry's relayed IPs is allowed, restricted to active relayed transport
//     addresses (so two relay-only participants reach each other, C06);
//  3. operator-denied CIDRs are denied ("configured");
//  4. operator-allowed CIDRs are allowed (Ferry's service ports stay blocked on host IPs);
//  5. the default special-purpose ranges are denied (loopback, RFC 1918, CGNAT, link-local,
//     ULA, multicast, broadcast, reserved, documentation, IPv4-embedding IPv6);
//  6. this host's own other addresses are denied ("own_address");
//  7. everything else is allowed.
type Policy struct {
	allowed, denied []netip.Prefix
	relayIPs        []netip.Addr
	hostIPs         map[netip.Addr]struct{}
}

// New builds a policy. relayIPs are the bind and advertised addresses of relayed
// transport addresses; hostIPs are this host's interface and listener addresses. IPv4-mapped
// prefixes and addresses are unmapped.
func New(allowed, denied []netip.Prefix, relayIPs, hostIPs []netip.Addr) *Policy {
	p := &Policy{hostIPs: make(map[netip.Addr]struct{}, len(hostIPs))}
	for _, pr := range allowed {
		p.allowed = append(p.allowed, unmapPrefix(pr))
	}
	for _, pr := range denied {
		p.denied = append(p.denied, unmapPrefix(pr))
	}
	for _, ip := range relayIPs {
		if ip.IsValid() {
			p.relayIPs = append(p.relayIPs, Canon(ip))
		}
	}
	for _, ip := range hostIPs {
		if ip.IsValid() {
			p.hostIPs[Canon(ip)] = struct{}{}
		}
	}
	return p
}

// unmapPrefix turns "::ffff:10.0.0.0/104" into "10.0.0.0/8" so operator CIDRs match the
// unmapped addresses Check compares against.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// Canon returns the form every comparison uses: IPv4-mapped IPv6 unmapped, zone dropped.
func Canon(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// Check judges a peer IP for a permission. It returns the class of use when allowed, or the
// denial reason (one of the Deny* constants).
func (p *Policy) Check(ip netip.Addr) (Class, string) {
	if !ip.IsValid() {
		return 0, DenyInvalid
	}
	ip = Canon(ip)
	for _, r := range p.relayIPs {
		if r == ip {
			return RelayOnly, ""
		}
	}
	for _, pr := range p.denied {
		if pr.Contains(ip) {
			return 0, DenyConfigured
		}
	}
	local := p.isLocal(ip)
	for _, pr := range p.allowed {
		if pr.Contains(ip) {
			if local {
				return Local, ""
			}
			return Open, ""
		}
	}
	for _, r := range defaultDenied {
		if r.prefix.Contains(ip) {
			return 0, r.reason
		}
	}
	if _, own := p.hostIPs[ip]; own {
		return 0, DenyOwnAddress
	}
	return Open, ""
}

// Allowed reports whether a permission for ip would be granted, and the denial reason if not.
func (p *Policy) Allowed(ip netip.Addr) (bool, string) {
	c, reason := p.Check(ip)
	return c != 0, reason
}

// isLocal: an address that reaches this host (loopback, unspecified, or a host address).
func (p *Policy) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() || (ip.Is4() && ip.As4()[0] == 0) {
		return true
	}
	_, own := p.hostIPs[ip]
	return own
}
