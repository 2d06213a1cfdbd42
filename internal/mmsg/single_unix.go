//go:build unix

package mmsg

import (
	"net/netip"
	"syscall"
)

// recvOne reads one datagram from fd into buf without blocking (the runtime made fd
// non-blocking): its length, source and whether it was longer than buf; syscall.EAGAIN when
// none is queued.
func recvOne(fd uintptr, buf []byte, _ bool) (int, netip.AddrPort, bool, error) {
	n, _, flags, from, err := syscall.Recvmsg(int(fd), buf, nil, 0)
	if err != nil {
		return 0, netip.AddrPort{}, false, err
	}
	return n, addrPortOf(from), flags&syscall.MSG_TRUNC != 0, nil
}

// sendOne sends buf to dst on fd without blocking; syscall.EAGAIN when the socket's buffer
// is full.
func sendOne(fd uintptr, buf []byte, dst *sockAddr) error {
	return syscall.Sendto(int(fd), buf, 0, dst.sockaddr())
}

// sockAddr is a destination in the form the system's send takes, kept in a Writer so that
// it is not allocated anew for each datagram.
type sockAddr struct {
	v4  syscall.SockaddrInet4
	v6  syscall.SockaddrInet6
	is4 bool
}

// set makes the address ap; on an AF_INET6 socket (v6), an IPv4 address is IPv4-mapped.
func (s *sockAddr) set(ap netip.AddrPort, v6 bool) {
	if a := ap.Addr(); a.Is4() && !v6 {
		s.v4, s.is4 = syscall.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, true
		return
	}
	s.v6, s.is4 = syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, false
}

func (s *sockAddr) sockaddr() syscall.Sockaddr {
	if s.is4 {
		return &s.v4
	}
	return &s.v6
}

func addrPortOf(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// isV6 reports whether fd is an AF_INET6 socket.
func isV6(fd uintptr) bool {
	sa, err := syscall.Getsockname(int(fd))
	_, v6 := sa.(*syscall.SockaddrInet6)
	return err == nil && v6
}
