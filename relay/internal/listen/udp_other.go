//go:build !linux

package listen

import (
	"errors"
	"net"
	"net/netip"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
)

// startUDP serves UDP listener sockets with a goroutine each, outside Linux.
func startUDP(l *Listeners, groups [][]*net.UDPConn) (udpEngine, error) {
	return startGoroutineUDP(l, groups)
}

// goroutineUDP serves UDP listener sockets with one goroutine per socket, reading through
// Go's poller: outside Linux.
type goroutineUDP struct {
	l     *Listeners
	socks []*alloc.Socket
	local []netip.AddrPort
}

func startGoroutineUDP(l *Listeners, groups [][]*net.UDPConn) (*goroutineUDP, error) {
	g := &goroutineUDP{l: l}
	for _, conns := range groups {
		if len(conns) == 0 {
			return nil, errors.New("relay: UDP listener without sockets")
		}
		for _, c := range conns {
			s, err := alloc.NewSocket(c)
			if err != nil {
				return nil, err
			}
			g.socks, g.local = append(g.socks, s), append(g.local, sockopt.AddrPort(c.LocalAddr()))
		}
	}
	for i, s := range g.socks {
		l.wg.Go(func() { g.read(s, g.local[i]) })
	}
	return g, nil
}

// read reads client datagrams in batches (recvmmsg) until the socket closes.
func (g *goroutineUDP) read(sock *alloc.Socket, local netip.AddrPort) {
	u := newUDPReader(g.l, nil)
	for {
		n, err := u.r.Read(sock.RawConn(), u.in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (ICMP-induced); the socket is still usable
		}
		u.batch(sock, local, n)
	}
}

func (g *goroutineUDP) release() error { return nil }

func (g *goroutineUDP) addrs() (out []netip.AddrPort) {
	seen := map[netip.AddrPort]bool{}
	for _, a := range g.local {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func (g *goroutineUDP) close() error {
	var errs []error
	for _, s := range g.socks {
		errs = append(errs, ignoreClosed(s.Close()))
	}
	return errors.Join(errs...)
}
