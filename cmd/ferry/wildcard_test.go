package main

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestUDPListenAddrs(t *testing.T) {
	host := func() ([]net.Addr, error) {
		var out []net.Addr
		for _, p := range []string{"127.0.0.1/8", "192.0.2.2/24", "::1/128", "fd00::2/64", "fe80::1/64"} {
			ip, n, _ := net.ParseCIDR(p)
			out = append(out, &net.IPNet{IP: ip, Mask: n.Mask})
		}
		return out, nil
	}
	v4only := func() ([]net.Addr, error) { return []net.Addr{&net.IPAddr{IP: net.ParseIP("127.0.0.1")}}, nil }
	for _, c := range []struct {
		in   string
		addr func() ([]net.Addr, error)
		want []string
	}{
		{"0.0.0.0:3478", host, []string{"127.0.0.1:3478", "192.0.2.2:3478"}},
		{"[::]:3478", host, []string{"[::1]:3478", "[fd00::2]:3478"}},
		{":0", host, []string{"127.0.0.1:0", "192.0.2.2:0", "[::1]:0", "[fd00::2]:0"}},
		{"192.0.2.2:3478", host, []string{"192.0.2.2:3478"}},
		{"[::]:3478", v4only, []string{"[::]:3478"}}, // nothing to expand to: as configured
	} {
		got, err := udpListenAddrs(c.in, c.addr)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("udpListenAddrs(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := udpListenAddrs("no-port", host); err == nil {
		t.Error("an address without a port was accepted")
	}
}

// A relay.bind_ip this host does not have fails at start-up with the key's name, rather
// than passing every check and then failing each Allocate with 508.
func TestRelayBindIPMustBeLocal(t *testing.T) {
	ok := relayAddrs{bind4: netip.MustParseAddr("127.0.0.1"), adv4: netip.MustParseAddr("203.0.113.10")}
	if err := ok.checkLocal(context.Background()); err != nil {
		t.Fatalf("127.0.0.1 refused: %v", err)
	}
	bad := relayAddrs{bind4: netip.MustParseAddr("203.0.113.77")} // TEST-NET-3: on no host here
	err := bad.checkLocal(context.Background())
	if err == nil || !strings.Contains(err.Error(), "relay.bind_ip: 203.0.113.77 is not an address of this host") {
		t.Fatalf("got %v", err)
	}
}
