//go:build windows

package mmsg

import (
	"errors"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// fionread is FIONREAD for WSAIoctl: the bytes queued on a socket.
const fionread = 0x4004667f

// recvOne reads one datagram from fd into buf: its length, source and whether it was longer
// than buf; syscall.EAGAIN when none is queued. Go's sockets on Windows block, so recvOne
// reads only when bytes are queued, or when readable says the runtime has just seen the
// socket readable (a datagram of zero bytes queues none).
func recvOne(fd uintptr, buf []byte, readable bool) (int, netip.AddrPort, bool, error) {
	h := windows.Handle(fd)
	if !readable {
		var queued, got uint32
		err := windows.WSAIoctl(h, fionread, nil, 0, (*byte)(unsafe.Pointer(&queued)), 4, &got, nil, 0)
		if err != nil {
			return 0, netip.AddrPort{}, false, err
		}
		if queued == 0 {
			return 0, netip.AddrPort{}, false, syscall.EAGAIN
		}
	}
	n, from, err := windows.Recvfrom(h, buf, 0)
	trunc := errors.Is(err, windows.WSAEMSGSIZE) // buf holds the datagram's first len(buf) bytes
	if trunc {
		n, err = len(buf), nil
	}
	if err != nil {
		return 0, netip.AddrPort{}, false, err
	}
	return n, addrPortOf(from), trunc, nil
}

// sendOne sends buf to dst on fd (a UDP send does not wait for the peer).
func sendOne(fd uintptr, buf []byte, dst *sockAddr) error {
	return windows.Sendto(windows.Handle(fd), buf, 0, dst.sockaddr())
}

// sockAddr is a destination in the form the system's send takes, kept in a Writer so that
// it is not allocated anew for each datagram.
type sockAddr struct {
	v4  windows.SockaddrInet4
	v6  windows.SockaddrInet6
	is4 bool
}

// set makes the address ap; on an AF_INET6 socket (v6), an IPv4 address is IPv4-mapped.
func (s *sockAddr) set(ap netip.AddrPort, v6 bool) {
	if a := ap.Addr(); a.Is4() && !v6 {
		s.v4, s.is4 = windows.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, true
		return
	}
	s.v6, s.is4 = windows.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, false
}

func (s *sockAddr) sockaddr() windows.Sockaddr {
	if s.is4 {
		return &s.v4
	}
	return &s.v6
}

func addrPortOf(sa windows.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *windows.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *windows.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// isV6 reports whether fd is an AF_INET6 socket.
func isV6(fd uintptr) bool {
	sa, err := windows.Getsockname(windows.Handle(fd))
	_, v6 := sa.(*windows.SockaddrInet6)
	return err == nil && v6
}
