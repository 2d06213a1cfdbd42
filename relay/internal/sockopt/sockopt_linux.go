//go:build linux

package sockopt

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxUDPSockets bounds the SO_REUSEPORT sockets ListenUDP opens for one address.
const MaxUDPSockets = 64

// ListenUDP opens n UDP sockets ("udp", "udp4" or "udp6") on one address, sharing it with
// SO_REUSEPORT so that the kernel spreads clients over them by 5-tuple hash (one client's
// datagrams always reach the same socket, in order). n ≤ 1 opens one plain socket. A port of 0
// binds an ephemeral port for all n. bufBytes > 0 sets each socket's receive and send buffer
// (see SetSocketBuffers); 0 keeps the kernel's default.
//
// Before opening the group, ListenUDP binds the address once without SO_REUSEPORT: if another
// process (an old Ferry still running) holds the port, the error is "address already in use"
// rather than a silent share of its traffic. (Two processes that probe within the same
// microseconds can still both get the port; the kernel offers no exclusive SO_REUSEPORT
// group.) Errors are wrapped with the address.
func ListenUDP(ctx context.Context, network, addr string, n, bufBytes int) ([]*net.UDPConn, error) {
	n = max(1, min(n, MaxUDPSockets))
	var plain net.ListenConfig
	first, err := plain.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("relay: listen udp %s: %w", addr, err)
	}
	if n > 1 {
		// The probe proved the address free; reopen it as a SO_REUSEPORT group. The port
		// stays the one the probe got, so ephemeral ports work too.
		addr = first.LocalAddr().String()
		_ = first.Close()
		first = nil
	}
	var socks []*net.UDPConn
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, s := range socks {
			_ = s.Close()
		}
		return nil, fmt.Errorf("relay: listen udp %s: %w", addr, err)
	}
	if first != nil {
		socks = append(socks, first.(*net.UDPConn))
	}
	reuse := net.ListenConfig{Control: reusePort}
	for len(socks) < n {
		pc, err := reuse.ListenPacket(ctx, network, addr)
		if err != nil {
			return fail(err)
		}
		socks = append(socks, pc.(*net.UDPConn))
	}
	if bufBytes > 0 {
		for _, s := range socks {
			if _, err := SetSocketBuffers(s, bufBytes); err != nil {
				return fail(err)
			}
		}
	}
	return socks, nil
}

// SetSocketBuffers asks for receive and send buffers (SO_RCVBUF, SO_SNDBUF) of bytes each on
// c, a *net.UDPConn or *net.TCPConn. It first tries SO_RCVBUFFORCE/SO_SNDBUFFORCE, which
// pass the kernel's net.core.rmem_max/wmem_max caps with CAP_NET_ADMIN, and falls back to
// the capped options. It returns the smaller of the two sizes the kernel granted, in the same
// unit as bytes (Linux reports double the usable size; that factor is taken out), so a
// result below bytes means the kernel capped the request.
func SetSocketBuffers(c syscall.Conn, bytes int) (granted int, err error) {
	return setSocketBuffers(c, bytes, true)
}

// SetSocketBuffersQuick is SetSocketBuffers without reading the result back (relay sockets,
// opened per allocation, where nobody reads it): two system calls fewer.
func SetSocketBuffersQuick(c syscall.Conn, bytes int) error {
	_, err := setSocketBuffers(c, bytes, false)
	return err
}

func setSocketBuffers(c syscall.Conn, bytes int, readBack bool) (granted int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		granted = math.MaxInt
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], bytes) != nil {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], bytes); serr != nil {
					return
				}
			}
			if !readBack {
				continue
			}
			var got int
			if got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, o[1]); serr != nil {
				return
			}
			granted = min(granted, got/2)
		}
	})
	if err := errors.Join(cerr, serr); err != nil {
		return 0, fmt.Errorf("socket buffers: %w", err)
	}
	if !readBack {
		return 0, nil
	}
	return granted, nil
}

func reusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// ReuseAddrPort is a net.ListenConfig and net.Dialer Control that sets SO_REUSEADDR and
// SO_REUSEPORT, so that a TCP relayed transport address and the connections RFC 6062 Connect
// opens from it share one address.
func ReuseAddrPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// SetBuffersFD sets the receive and send buffers of a bare socket descriptor to bytes each,
// past the kernel's caps where Ferry may (CAP_NET_ADMIN); best effort.
func SetBuffersFD(fd, bytes int) {
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], bytes) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], bytes)
		}
	}
}
