// Package sockopt opens and tunes the relay's sockets: SO_REUSEPORT groups of UDP listener
// sockets, socket buffers, and address reuse for RFC 6062 connections. Linux gets all of it;
// other systems (a developer's laptop) get plain sockets.
package sockopt

import (
	"net"
	"net/netip"
)

// AddrPort returns the address of a *net.UDPAddr or *net.TCPAddr as the relay compares
// addresses: IPv4-mapped IPv6 unmapped, no zone. Other address types give the zero value.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}
