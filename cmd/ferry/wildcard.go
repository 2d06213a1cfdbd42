package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// UDP on a wildcard address. A UDP socket bound to 0.0.0.0 or :: answers from whatever
// source address the kernel's routing picks for the client, which on a host with more than
// one address need not be the address the client sent to; the client then drops the answer
// (its 5-tuple does not match) and TURN over UDP fails with no error anywhere. So Ferry binds
// a wildcard turn.udp_listen address as one socket group per address the host has at
// start-up, as coturn does: each answer leaves from the address that was asked. An address
// added to the host later is served after a restart.

// udpListenAddrs expands a turn.udp_listen entry ("host:port") whose host is unspecified
// ("0.0.0.0": the host's IPv4 addresses; "::": its IPv6 ones; "": both) into one entry per
// address from hostAddrs, skipping IPv6 link-local addresses (they need a zone, and no client
// reaches a TURN server through one). Any other entry, or a wildcard with no such address on
// the host, is returned as it is. Port 0 stays 0: the caller binds the first address and
// reuses its port for the rest (withPort).
func udpListenAddrs(addr string, hostAddrs func() ([]net.Addr, error)) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("turn.udp_listen %q: %w", addr, err)
	}
	want4, want6 := host == "" || host == "0.0.0.0", host == "" || host == "::"
	if !want4 && !want6 {
		return []string{addr}, nil
	}
	ifaddrs, err := hostAddrs()
	if err != nil {
		return nil, fmt.Errorf("turn.udp_listen %q: the host's addresses: %w", addr, err)
	}
	var out []string
	for _, a := range ifaddrs {
		p, ok := netip.AddrFromSlice(ipOf(a))
		if !ok {
			continue
		}
		p = p.Unmap()
		if (p.Is4() && want4) || (p.Is6() && want6 && !p.IsLinkLocalUnicast()) {
			out = append(out, net.JoinHostPort(p.String(), port))
		}
	}
	if len(out) == 0 {
		return []string{addr}, nil
	}
	return out, nil
}

// ipOf is the IP of an interface address (*net.IPNet or *net.IPAddr).
func ipOf(a net.Addr) net.IP {
	switch v := a.(type) {
	case *net.IPNet:
		return v.IP
	case *net.IPAddr:
		return v.IP
	}
	return nil
}

// withPort replaces the port of addr ("host:port") with port.
func withPort(addr string, port int) string {
	host, _, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, strconv.Itoa(port))
}
