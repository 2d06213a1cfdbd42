package relay

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

var transports = []string{"udp", "tcp", "tls"}

// allocated returns a client with an allocation over network.
func (e *testEnv) allocated(t testing.TB, network, user string) (*stunClient, netip.AddrPort) {
	t.Helper()
	c := e.dial(t, network)
	cred := e.cred(t, user, time.Hour)
	code, relayed := c.allocate(cred.Username, cred.Password)
	if code != 0 {
		t.Fatalf("allocate over %s: %d", network, code)
	}
	return c, relayed
}

// C01: loopback and unspecified peers in every spelling get 403 for CreatePermission and
// ChannelBind; Send indications and ChannelData to them are dropped; a mixed request is
// refused whole and installs nothing; no byte reaches the canaries or Ferry's own ports.
// Ferry's own relay IP (127.0.0.4 here) takes permissions, since relay-to-relay calls need
// them (C06), but only active relayed transport addresses are reachable on it.
func TestC01LoopbackAndUnspecifiedPeers(t *testing.T) {
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t, withRelayIP("127.0.0.4"))
			can := newCanary(t, "127.0.0.3")
			echo := newUDPEcho(t, "127.0.0.2")
			c, _ := env.allocated(t, network, "u-c01")
			cp := strconv.Itoa(int(can.port()))
			ferryPorts := []string{strconv.Itoa(env.udp.Port), strconv.Itoa(env.tcp.Port), strconv.Itoa(env.tls.Port)}
			hosts := []string{"0.0.0.0", "0.1.2.3", "[::]", "[::1]", "127.0.0.1", "127.0.0.3"}
			num := uint16(0x4000)
			for _, h := range hosts {
				for _, port := range append([]string{"9090", "8080", cp}, ferryPorts...) {
					p := peer(h + ":" + port)
					if code, _ := c.do(stun.MethodCreatePermission, p); code != 403 {
						t.Errorf("CreatePermission %s: %d, want 403", p.ap, code)
					}
					if code, _ := c.do(stun.MethodChannelBind, chanNum(num), p); code != 403 {
						t.Errorf("ChannelBind %s: %d, want 403", p.ap, code)
					}
					c.send(c.sendIndication(p, []byte("probe")))
					c.send(c.channelData(num, []byte("probe")))
					num++
				}
			}
			// One request, an allowed and a denied peer: refused as a whole.
			if code, _ := c.do(stun.MethodCreatePermission, peerAttr{ap: echo.addr()}, peer("127.0.0.1:9")); code != 403 {
				t.Fatalf("mixed CreatePermission: %d, want 403", code)
			}
			// No permission for 127.0.0.2 was left behind: its traffic goes nowhere.
			c.send(c.sendIndication(peerAttr{ap: echo.addr()}, []byte("must not arrive")))
			c.expectNothing(300 * time.Millisecond)
			if n := echo.n.Load(); n != 0 {
				t.Fatalf("the allowed half of a refused request was installed: peer got %d", n)
			}
			if n := env.metric(t, "ferry_turn_permissions_active"); n != 0 {
				t.Fatalf("permissions installed: %v", n)
			}
			// The relay IP: ChannelBind and data to anything but a relayed transport address
			// are refused.
			for _, port := range append([]string{"9090", "8080", "22"}, ferryPorts...) {
				p := peer("127.0.0.4:" + port)
				if code, _ := c.do(stun.MethodChannelBind, chanNum(num), p); code != 403 {
					t.Errorf("ChannelBind %s: %d, want 403", p.ap, code)
				}
				c.send(c.sendIndication(p, []byte("probe")))
				num++
			}
			c.expectNothing(200 * time.Millisecond)
		})
	}
}

// C02: IPv4-mapped IPv6 peers are judged as the IPv4 address they carry, on IPv4 and IPv6
// allocations.
func TestC02IPv4MappedPeers(t *testing.T) {
	env := newTestEnv(t, withIPv6(t), withRelayIP("127.0.0.4"))
	can := newCanary(t, "127.0.0.3")
	mapped := []string{"[::ffff:127.0.0.1]:80", "[::ffff:0.0.0.0]:80", "[::ffff:169.254.169.254]:80",
		"[::ffff:127.0.0.3]:" + strconv.Itoa(int(can.port()))}
	run := func(t *testing.T, c *stunClient) {
		for i, s := range mapped {
			p := peer6(s)
			code, _ := c.do(stun.MethodCreatePermission, p)
			if code != 403 && code != 443 {
				t.Errorf("CreatePermission %s: %d, want 403 (or 443)", s, code)
			}
			code, _ = c.do(stun.MethodChannelBind, chanNum(0x4000+uint16(i)), p)
			if code != 403 && code != 443 {
				t.Errorf("ChannelBind %s: %d, want 403 (or 443)", s, code)
			}
			c.send(c.sendIndication(p, []byte("probe")))
		}
	}
	t.Run("ipv4-allocation", func(t *testing.T) {
		c, _ := env.allocated(t, "udp", "u-c02")
		run(t, c)
	})
	t.Run("ipv6-allocation", func(t *testing.T) {
		c := dialClient(t, "udp", env.udp6, "")
		cred := env.cred(t, "u-c02-6", time.Hour)
		code, relayed := c.allocate(cred.Username, cred.Password, requestedFamily(2))
		if code != 0 || !relayed.Addr().Is6() {
			t.Fatalf("IPv6 allocation: %d %s", code, relayed)
		}
		run(t, c)
	})
}

// C04: metadata, link-local, ULA, site-local, CGNAT, reserved, multicast and broadcast peers
// get 403; nothing is ever emitted towards them.
func TestC04SpecialPurposePeers(t *testing.T) {
	env := newTestEnv(t)
	c, _ := env.allocated(t, "udp", "u-c04")
	for i, s := range []string{"169.254.169.254:80", "169.254.0.1:80", "[fe80::1]:80", "[fd00::1]:80",
		"[fec0::1]:80", "100.64.0.1:80", "192.0.0.1:80", "198.18.0.1:80", "224.0.0.1:80",
		"239.255.255.250:1900", "255.255.255.255:80", "240.0.0.1:80", "10.0.0.1:80",
		"172.16.0.1:80", "192.168.0.1:80"} {
		p := peer(s)
		if code, _ := c.do(stun.MethodCreatePermission, p); code != 403 {
			t.Errorf("CreatePermission %s: %d, want 403", s, code)
		}
		if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000+uint16(i)), p); code != 403 {
			t.Errorf("ChannelBind %s: %d, want 403", s, code)
		}
	}
	if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "write_error"); got != 0 {
		t.Fatalf("something was written towards a denied peer: %v write errors", got)
	}
	if got := env.metric(t, "ferry_turn_peer_denials_total", "reason", "link_local"); got < 6 {
		t.Fatalf("link-local denials counted: %v", got)
	}
}

// C06: two relay-only participants on the same Ferry reach each other through their relayed
// transport addresses, directly and when an advertised (NAT) address differs from the bind
// address; Ferry's other ports on its relay IP stay unreachable.
func TestC06RelayToRelay(t *testing.T) {
	for _, variant := range []string{"bind", "advertised"} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(variant+"/"+network, func(t *testing.T) {
				var opts []func(*Config)
				if variant == "advertised" {
					opts = append(opts, func(c *Config) { c.AdvertisedIPv4 = netip.MustParseAddr("203.0.113.10") })
				}
				env := newTestEnv(t, opts...)
				can := newCanary(t, "127.0.0.1")
				a, ra := env.allocated(t, network, "doctor")
				b, rb := env.allocated(t, "udp", "patient")
				if variant == "advertised" && (ra.Addr().String() != "203.0.113.10" || rb.Addr().String() != "203.0.113.10") {
					t.Fatalf("relayed addresses %s %s, want the advertised IP", ra, rb)
				}
				if code, _ := a.do(stun.MethodCreatePermission, peerAttr{ap: rb}); code != 0 {
					t.Fatalf("A permission for R_B: %d", code)
				}
				if code, _ := b.do(stun.MethodCreatePermission, peerAttr{ap: ra}); code != 0 {
					t.Fatalf("B permission for R_A: %d", code)
				}
				if code, _ := a.do(stun.MethodChannelBind, chanNum(0x4001), peerAttr{ap: rb}); code != 0 {
					t.Fatalf("A ChannelBind R_B: %d", code)
				}
				a.send(a.channelData(0x4001, []byte("A to B")))
				b.expectData(0, ra, []byte("A to B"))
				b.send(b.sendIndication(peerAttr{ap: ra}, []byte("B to A")))
				a.expectData(0x4001, rb, []byte("B to A"))

				// Ferry's own ports and unallocated ports on the relay IP: dropped, or 403.
				for _, port := range []uint16{can.port(), 22, uint16(env.udp.Port), uint16(env.tcp.Port)} {
					p := peerAttr{ap: netip.AddrPortFrom(ra.Addr(), port)}
					a.send(a.sendIndication(p, []byte("to own port")))
					if code, _ := a.do(stun.MethodChannelBind, chanNum(0x4100+port%256), p); code != 403 {
						t.Errorf("ChannelBind to relay IP port %d: %d, want 403", port, code)
					}
				}
				if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "peer_port_denied"); got < 4 {
					t.Errorf("dropped to own ports: %v, want 4", got)
				}
			})
		}
	}
}

// C07: over TCP and TLS, ChannelData padding is framing, not payload, in both directions;
// several frames and a STUN request in one write are all handled, and a frame split across
// writes is reassembled.
func TestC07ChannelDataPaddingOverStreams(t *testing.T) {
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t)
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			pAddr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
			c, relayed := env.allocated(t, network, "u-c07")
			if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: pAddr}); code != 0 {
				t.Fatalf("ChannelBind: %d", code)
			}
			thirteen := []byte("thirteen-byte")
			var w bytes.Buffer
			w.Write([]byte{0x40, 0x00, 0x00, 0x0D})
			w.Write(thirteen)
			w.Write([]byte{0, 0, 0})
			w.Write([]byte{0x40, 0x00, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF})
			binding := c.build(stun.MethodBinding)
			w.Write(binding.Raw)
			c.send(w.Bytes()) // one write: two frames and a Binding request

			buf := make([]byte, 100)
			_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
			for _, want := range [][]byte{thirteen, {0xDE, 0xAD, 0xBE, 0xEF}} {
				n, _, err := pc.ReadFromUDP(buf)
				if err != nil || !bytes.Equal(buf[:n], want) {
					t.Fatalf("peer got %x (%v), want %x", buf[:n], err, want)
				}
			}
			r, err := c.recv(3 * time.Second)
			if err != nil || !stun.IsMessage(r) || wire.Be16(r) != 0x0101 {
				t.Fatalf("Binding over the same write: %x %v", r, err)
			}

			// A frame split across two writes.
			c.send([]byte{0x40, 0x00, 0x00, 0x05, 'h', 'e'})
			time.Sleep(50 * time.Millisecond)
			c.send([]byte{'l', 'l', 'o', 0, 0, 0})
			_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, _, err := pc.ReadFromUDP(buf); err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("split frame: %q %v", buf[:n], err)
			}

			// Peer to client: 13, 14 and 15 bytes arrive with those LENGTHs, padded on the
			// stream (the client's framing would desynchronise otherwise).
			for _, n := range []int{13, 14, 15} {
				if _, err := pc.WriteToUDPAddrPort(bytes.Repeat([]byte{'x'}, n), relayed); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range []int{13, 14, 15} {
				f, err := c.recv(3 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if wire.Be16(f) != 0x4000 || int(wire.Be16(f[2:])) != n || len(f) != 4+n {
					t.Fatalf("frame %x, want channel 0x4000 length %d", f, n)
				}
			}
			if len(c.rbuf) != 0 {
				t.Fatalf("stream left %d unframed bytes", len(c.rbuf))
			}
		})
	}
}

// C09: ChannelData whose LENGTH lies is never trusted: short datagrams are dropped, extra
// bytes are cut, unbound channels are dropped, the server keeps serving, and the discards
// are counted.
func TestC09ChannelDataLengthProbe(t *testing.T) {
	env := newTestEnv(t)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, relayed := env.allocated(t, "udp", "u-c09")
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: pc.LocalAddr().(*net.UDPAddr).AddrPort()}); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	before := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "malformed")
	for range 1000 {
		c.send([]byte{0x40, 0x00, 0x8A, 0xB6, 0x78, 0x78, 0x78, 0x00}) // LENGTH 35510, 4 bytes
		time.Sleep(time.Millisecond)
	}
	c.send([]byte{0x40, 0x00, 0x00, 0x08, 1, 2, 3, 4})       // LENGTH exceeds data
	c.send([]byte{0x40, 0x01, 0x00, 0x02, 1, 2})             // unbound channel
	c.send([]byte{0x40, 0x00, 0x00})                         // 3 bytes
	c.send([]byte{0x40, 0x00, 0x00, 0x02, 1, 2, 3, 4, 5, 6}) // LENGTH < data: exactly 2 bytes
	buf := make([]byte, 65536)
	_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := pc.ReadFromUDP(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{1, 2}) {
		t.Fatalf("peer got %x (%v), want 0102", buf[:n], err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := pc.ReadFromUDP(buf); err == nil {
		t.Fatalf("peer got a second datagram %x", buf[:n])
	}
	if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "malformed") - before; got != 1002 {
		t.Errorf("malformed drops counted: %v, want 1002", got)
	}
	if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "no_channel"); got != 1 {
		t.Errorf("unbound-channel drops counted: %v, want 1", got)
	}
	// Still serving: the peer's answer comes back.
	if _, err := pc.WriteToUDPAddrPort([]byte("alive"), relayed); err != nil {
		t.Fatal(err)
	}
	c.expectData(0x4000, netip.AddrPort{}, []byte("alive"))
}

// C18: ChannelBind accepts 0x4000-0x4FFF only (RFC 8656 §12); stream framing still
// recognises 0x5000-0x7FFF so a stray frame does not desynchronise TCP.
func TestC18ChannelNumberRange(t *testing.T) {
	env := newTestEnv(t)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			c, _ := env.allocated(t, network, "u-c18-"+network)
			for i, n := range []uint16{0x3FFF, 0x4000, 0x4FFF, 0x5000, 0x7FFF, 0xFFFF} {
				want := 400
				if n == 0x4000 || n == 0x4FFF {
					want = 0
				}
				p := peer("127.0.0.2:" + strconv.Itoa(7000+i))
				if code, _ := c.do(stun.MethodChannelBind, chanNum(n), p); code != want {
					t.Errorf("ChannelBind %#x: %d, want %d", n, code, want)
				}
			}
			// The legacy flag admits the RFC 5766 range, never beyond it.
			legacy := newTestEnv(t, func(c *Config) { c.LegacyChannelNumbers = true })
			lc, _ := legacy.allocated(t, network, "u-c18-legacy")
			for i, n := range []uint16{0x5000, 0x7FFF, 0x8000, 0x3FFF} {
				want := 0
				if n == 0x8000 || n == 0x3FFF {
					want = 400
				}
				if code, _ := lc.do(stun.MethodChannelBind, chanNum(n), peer("127.0.0.2:"+strconv.Itoa(7100+i))); code != want {
					t.Errorf("legacy ChannelBind %#x: %d, want %d", n, code, want)
				}
			}
			if network == "tcp" {
				var w bytes.Buffer
				w.Write([]byte{0x50, 0x00, 0x00, 0x03, 1, 2, 3, 0})
				w.Write(c.build(stun.MethodBinding).Raw)
				c.send(w.Bytes())
				r, err := c.recv(3 * time.Second)
				if err != nil || wire.Be16(r) != 0x0101 {
					t.Fatalf("Binding after a 0x5000 frame: %x %v", r, err)
				}
			}
		})
	}
}
