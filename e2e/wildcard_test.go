package e2e

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// C20's kind (the addresses a client sees must be the ones it can use): with turn.udp_listen
// on 0.0.0.0, a client on this host's own non-loopback address that asks 127.0.0.1 gets its
// answer from 127.0.0.1:port, the address it asked. A socket bound to the wildcard would
// answer from the address the kernel routes with (the client's own, here), and the client
// would drop it.
func TestC20WildcardListenAnswersFromTheAddressAsked(t *testing.T) {
	var other netip.Addr
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				other = ip
				break
			}
		}
	}
	if !other.IsValid() {
		t.Skip("this host has no IPv4 address besides loopback")
	}
	f := startFerry(t, `
turn:
  udp_listen: ["0.0.0.0:0"]
  tcp_listen: []
  tls_listen: []
relay:
  bind_ip: 127.0.0.1
`)
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(other, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(f.udpPort))
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.WriteToUDPAddrPort(m.Raw, server); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer to a Binding request to %s from %s: %v", server, other, err)
	}
	if from.Addr().Unmap() != server.Addr() || from.Port() != server.Port() {
		t.Fatalf("answer from %s, want from %s, the address asked", from, server)
	}
	r := &stun.Message{Raw: buf[:n]}
	var mapped stun.XORMappedAddress
	if err := r.Decode(); err != nil {
		t.Fatal(err)
	}
	if err := mapped.GetFrom(r); err != nil {
		t.Fatal(err)
	}
	if got, _ := netip.AddrFromSlice(mapped.IP.To4()); got != other || mapped.Port != c.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("XOR-MAPPED-ADDRESS %s, want %s", mapped, c.LocalAddr())
	}
}
