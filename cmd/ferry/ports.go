package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/internal/portmux"
	"github.com/ferryrelay/ferry/relay"
)

// sockets are the ports serve opened: main owns ports and TLS, components get sockets.
type sockets struct {
	udp   [][]*net.UDPConn
	tcp   []net.Listener // TURN over TCP: net.Listen, or a shared port's plain TURN side
	tls   []net.Listener // TURN over TLS: tls.NewListener, or a shared port's TURN side
	raw   []net.Listener // the TCP sockets under tls
	muxes []*portmux.Mux // ports shared by TURN over TLS with TURN over TCP, HTTPS or both
	http  net.Listener   // nil when http.listen is ""
	// httpShared: http is a shared port's HTTPS side, whose TLS handshake the mux did.
	httpShared bool
	admin      net.Listener // nil when admin.listen is ""
}

// openSockets opens the configured ports; warn reports a kernel cap on socket buffers.
func openSockets(ctx context.Context, f *config.File, tlsc tlsConfigs, warn func(string)) (*sockets, error) {
	s := &sockets{}
	for _, step := range []func(context.Context, *config.File, tlsConfigs) error{s.openUDP, s.openStreams, s.openHTTP} {
		if err := step(ctx, f, tlsc); err != nil {
			s.close()
			return nil, err
		}
	}
	s.warnBuffers(f, warn)
	return s, nil
}

func (s *sockets) openUDP(ctx context.Context, f *config.File, _ tlsConfigs) error {
	if !f.RunsRelay() {
		return nil
	}
	n := f.TURN.UDPSockets
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	buf := int(f.TURN.SocketBuffer)
	for _, configured := range f.TURN.UDPListen {
		addrs, err := udpListenAddrs(configured, net.InterfaceAddrs)
		if err != nil {
			return fmt.Errorf("turn: %w", err)
		}
		port := 0 // a port 0 entry: the port the first address got, for all of them
		for _, a := range addrs {
			if port != 0 {
				a = withPort(a, port)
			}
			socks, err := relay.ListenUDP(ctx, listenNetwork("udp", a), a, n, buf)
			if err != nil {
				return fmt.Errorf("turn: %w", err)
			}
			s.udp = append(s.udp, socks)
			port = socks[0].LocalAddr().(*net.UDPAddr).Port
		}
	}
	return nil
}

// openStreams opens TURN's TCP and TLS ports. A turn.tls_listen address that
// turn.tcp_listen or http.listen names too becomes one port for them (portmux): turns:,
// turn:?transport=tcp and the HTTPS API on 443, told apart by their first bytes.
func (s *sockets) openStreams(ctx context.Context, f *config.File, tlsc tlsConfigs) error {
	var lc net.ListenConfig
	if !f.RunsRelay() {
		return nil
	}
	for _, a := range f.TURN.TCPListen {
		if sharedWithTLS(f, a) {
			continue // opened with its TLS address below
		}
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fmt.Errorf("turn: listen tcp %s: %w", a, err)
		}
		s.tcp = append(s.tcp, ln)
	}
	for _, a := range f.TURN.TLSListen {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fmt.Errorf("turn: listen tls %s: %w", a, err)
		}
		withTCP, withHTTP := sharedWithTLS(f, a), sharedWithHTTP(f, a) && s.http == nil
		if !withTCP && !withHTTP {
			s.raw = append(s.raw, ln)
			s.tls = append(s.tls, tls.NewListener(ln, portmux.TLSConfig(tlsc.turn, false)))
			continue
		}
		base := tlsc.turn
		if withHTTP {
			base = tlsc.shared
		}
		m := portmux.New(ln, portmux.Config{TLS: portmux.TLSConfig(base, withHTTP), TURNTCP: withTCP, HTTPS: withHTTP})
		s.muxes = append(s.muxes, m)
		s.tls = append(s.tls, m.TURNTLS())
		if withTCP {
			s.tcp = append(s.tcp, m.TURNTCP())
		}
		if withHTTP {
			s.http, s.httpShared = m.HTTPS(), true
		}
	}
	return nil
}

func (s *sockets) openHTTP(ctx context.Context, f *config.File, _ tlsConfigs) error {
	var lc net.ListenConfig
	if a := f.HTTP.Listen; a != "" && s.http == nil && f.RunsSignaling() {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fmt.Errorf("http: listen %s: %w", a, err)
		}
		s.http = ln
	}
	if a := f.Admin.Listen; a != "" {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fmt.Errorf("admin: listen %s: %w", a, err)
		}
		s.admin = ln
	}
	return nil
}

// warnBuffers says once per setting when the kernel capped the socket buffers asked for.
func (s *sockets) warnBuffers(f *config.File, warn func(string)) {
	if buf := int(f.TURN.SocketBuffer); len(s.udp) > 0 && buf > 0 {
		if got, err := relay.SetSocketBuffers(s.udp[0][0], buf); err == nil && got < buf {
			warn(bufferWarning("turn.socket_buffer", buf, got))
		}
	}
	if rbuf := int(f.Relay.SocketBuffer); rbuf > 0 {
		if probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil {
			if got, err := relay.SetSocketBuffers(probe, rbuf); err == nil && got < rbuf {
				warn(bufferWarning("relay.socket_buffer", rbuf, got))
			}
			_ = probe.Close()
		}
	}
}

// close closes every socket; on the way up, before the HTTP servers own theirs.
func (s *sockets) close() {
	s.closeTURN()
	for _, ln := range []net.Listener{s.http, s.admin} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// closeTURN closes the TURN sockets and the shared ports (the HTTP servers close their
// listeners on Shutdown).
func (s *sockets) closeTURN() {
	for _, socks := range s.udp {
		for _, c := range socks {
			_ = c.Close()
		}
	}
	for _, ln := range slices.Concat(s.tcp, s.tls, s.raw) {
		_ = ln.Close()
	}
	for _, m := range s.muxes {
		_ = m.Close()
	}
}

// addrs returns the local addresses of the TURN ports, by transport.
func (s *sockets) addrs() (udp, tcp, tls []net.Addr) {
	for _, c := range s.udp {
		udp = append(udp, c[0].LocalAddr())
	}
	for _, l := range s.tcp {
		tcp = append(tcp, l.Addr())
	}
	for _, l := range s.tls {
		tls = append(tls, l.Addr())
	}
	return udp, tcp, tls
}

// sharedWithHTTP reports whether the TURN TLS address a is also http.listen: one port (443)
// for turns: and the HTTPS API, told apart by ALPN. Port 0 means "any free port", so two
// such entries are two listeners.
func sharedWithHTTP(f *config.File, a string) bool {
	return a == f.HTTP.Listen && !strings.HasSuffix(a, ":0") && f.RunsSignaling()
}

// sharedWithTLS reports whether the address a is in both turn.tcp_listen and
// turn.tls_listen: one port for TURN over TCP and over TLS, told apart by the first byte.
func sharedWithTLS(f *config.File, a string) bool {
	return !strings.HasSuffix(a, ":0") && slices.Contains(f.TURN.TCPListen, a) && slices.Contains(f.TURN.TLSListen, a)
}

func portsOf(addrs []net.Addr) []int {
	var out []int
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			out = append(out, int(ap.Port()))
		}
	}
	return out
}

func ports(addrs ...net.Addr) string {
	var parts []string
	for _, p := range portsOf(addrs) {
		if s := strconv.Itoa(p); !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ",")
}

// bufferWarning says that the kernel granted got of the asked socket buffer bytes, and how to
// raise its cap.
func bufferWarning(key string, asked, got int) string {
	return fmt.Sprintf("%s: the kernel capped socket buffers at %d of the %d bytes asked for; "+
		"bursts may be dropped (ferry_turn_dropped_packets_total does not see kernel drops, netstat -su does). "+
		"Raise the cap: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d (deploy/sysctl/99-ferry.conf)",
		key, got, asked, asked, asked)
}
