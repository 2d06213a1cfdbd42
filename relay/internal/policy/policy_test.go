package policy

import (
	"net/netip"
	"testing"
)

func TestPeerPolicyTable(t *testing.T) {
	p := New(
		[]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("::ffff:10.9.0.0/112")},
		[]netip.Prefix{netip.MustParsePrefix("198.51.100.77/32"), netip.MustParsePrefix("8.8.4.0/24")},
		[]netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.10")},
		[]netip.Addr{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")},
	)
	cases := []struct {
		ip     string
		class  Class
		reason string
	}{
		// the default deny list, IPv4
		{"0.0.0.0", 0, DenyUnspecified},
		{"0.1.2.3", 0, DenyUnspecified},
		{"127.0.0.1", 0, DenyLoopback},
		{"127.255.255.254", 0, DenyLoopback},
		{"10.0.0.1", 0, DenyPrivate},
		{"172.16.0.1", 0, DenyPrivate},
		{"172.31.255.255", 0, DenyPrivate},
		{"192.168.1.1", 0, DenyPrivate},
		{"100.64.0.1", 0, DenyCGNAT},
		{"100.127.255.255", 0, DenyCGNAT},
		{"169.254.169.254", 0, DenyLinkLocal},
		{"169.254.0.1", 0, DenyLinkLocal},
		{"192.0.0.1", 0, DenyReserved},
		{"198.18.0.1", 0, DenyReserved},
		{"240.0.0.1", 0, DenyReserved},
		{"224.0.0.1", 0, DenyMulticast},
		{"239.255.255.250", 0, DenyMulticast},
		{"255.255.255.255", 0, DenyBroadcast},
		{"192.0.2.1", 0, DenyDocumentation},
		{"198.51.100.1", 0, DenyDocumentation},
		{"203.0.113.1", 0, DenyDocumentation},
		// IPv6
		{"::", 0, DenyUnspecified},
		{"::1", 0, DenyLoopback},
		{"fe80::1", 0, DenyLinkLocal},
		{"fe80::1%eth0", 0, DenyLinkLocal},
		{"fd00::1", 0, DenyUniqueLocal},
		{"fc00::1", 0, DenyUniqueLocal},
		{"fec0::1", 0, DenySiteLocal},
		{"ff02::1", 0, DenyMulticast},
		{"2001:db8::1", 0, DenyDocumentation},
		{"3fff::1", 0, DenyDocumentation},
		{"100::1", 0, DenyReserved},
		// IPv4 in IPv6 clothing: judged as the IPv4 it reaches (C02)
		{"::ffff:127.0.0.1", 0, DenyLoopback},
		{"::ffff:0.0.0.0", 0, DenyUnspecified},
		{"::ffff:169.254.169.254", 0, DenyLinkLocal},
		{"::ffff:10.1.2.3", 0, DenyPrivate},
		{"::127.0.0.1", 0, DenyIPv4Embedding},
		{"::ffff:0:a00:1", 0, DenyIPv4Embedding},  // IPv4-translated 10.0.0.1
		{"::ffff:0:7f00:1", 0, DenyIPv4Embedding}, // IPv4-translated 127.0.0.1
		{"64:ff9b::7f00:1", 0, DenyIPv4Embedding},
		{"64:ff9b:1::a00:1", 0, DenyIPv4Embedding},
		{"2002:7f00:1::1", 0, DenyIPv4Embedding},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", 0, DenyIPv4Embedding},
		// this host's own addresses
		{"93.184.216.34", 0, DenyOwnAddress},
		{"::ffff:93.184.216.34", 0, DenyOwnAddress},
		// the relay's own IPs: relay-to-relay only (C06), even inside denied ranges
		{"192.0.2.10", RelayOnly, ""},
		{"203.0.113.10", RelayOnly, ""},
		{"::ffff:203.0.113.10", RelayOnly, ""},
		// operator lists
		{"127.0.0.2", Local, ""},
		{"::ffff:127.0.0.2", Local, ""},
		{"10.9.0.7", Open, ""},
		{"10.9.1.7", Open, ""}, // ::ffff:10.9.0.0/112 is 10.9.0.0/16
		{"10.10.0.1", 0, DenyPrivate},
		{"198.51.100.77", 0, DenyConfigured},
		{"8.8.4.4", 0, DenyConfigured},
		// ordinary public peers
		{"8.8.8.8", Open, ""},
		{"2a00:1450:4001:82b::200e", Open, ""},
		{"::ffff:8.8.8.8", Open, ""},
	}
	for _, c := range cases {
		class, reason := p.Check(netip.MustParseAddr(c.ip))
		if class != c.class || reason != c.reason {
			t.Errorf("%s: got class %d reason %q, want %d %q", c.ip, class, reason, c.class, c.reason)
		}
	}
	if c, r := p.Check(netip.Addr{}); c != 0 || r != DenyInvalid {
		t.Errorf("invalid address: %d %q", c, r)
	}
}
