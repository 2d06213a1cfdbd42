//go:build linux

package alloc

import (
	"net/netip"
	"sync/atomic"
	"syscall"

	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"golang.org/x/sys/unix"
)

// rawFD is a non-blocking socket descriptor outside Go's poller, which event loops use
// directly. Closing is safe from any goroutine: the descriptor is closed when the last
// user releases it, so its number is never reused under a loop still reading it.
type rawFD struct {
	fd      int
	state   atomic.Int32 // users, plus rawClosing once closed
	onClose func()       // after the descriptor is closed: free its port and slot
}

const rawClosing = 1 << 30

// acquire marks a use of the descriptor; false once it is closing.
func (r *rawFD) acquire() bool {
	if r.state.Add(1)&rawClosing != 0 {
		r.release()
		return false
	}
	return true
}

func (r *rawFD) release() {
	if r.state.Add(-1) == rawClosing {
		r.finish()
	}
}

// close closes the descriptor now, or when its last user releases it.
func (r *rawFD) close() {
	for {
		s := r.state.Load()
		if s&rawClosing != 0 {
			return
		}
		if r.state.CompareAndSwap(s, s|rawClosing) {
			if s == 0 {
				r.finish()
			}
			return
		}
	}
}

func (r *rawFD) finish() {
	if r.state.CompareAndSwap(rawClosing, rawClosing|1<<29) { // once
		_ = unix.Close(r.fd)
		if r.onClose != nil {
			r.onClose()
		}
	}
}

// The syscall.RawConn methods run f once on the descriptor, never waiting: when f reports
// that it would block (false), they return EAGAIN, so a full send buffer drops rather than
// stalls an event loop.

func (r *rawFD) Control(f func(fd uintptr)) error {
	if !r.acquire() {
		return errClosed
	}
	defer r.release()
	f(uintptr(r.fd))
	return nil
}

func (r *rawFD) Read(f func(fd uintptr) bool) error  { return r.once(f) }
func (r *rawFD) Write(f func(fd uintptr) bool) error { return r.once(f) }

func (r *rawFD) once(f func(fd uintptr) bool) error {
	if !r.acquire() {
		return errClosed
	}
	done := f(uintptr(r.fd))
	r.release()
	if !done {
		return syscall.EAGAIN
	}
	return nil
}

// openRawUDP opens a non-blocking UDP socket outside Go's poller bound to bind, with socket
// buffers of bufBytes (0: the kernel's default).
func openRawUDP(bind netip.AddrPort, bufBytes int) (*Socket, error) {
	domain := unix.AF_INET
	if bind.Addr().Is6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	if domain == unix.AF_INET6 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		sa = &unix.SockaddrInet6{Port: int(bind.Port()), Addr: bind.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(bind.Port()), Addr: bind.Addr().As4()}
	}
	if bufBytes > 0 {
		sockopt.SetBuffersFD(fd, bufBytes) // best effort: the kernel default still relays
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	r := &rawFD{fd: fd}
	return &Socket{raw: r, rc: r, v6: domain == unix.AF_INET6}, nil
}

// RawSockets reports whether relay sockets can be bare descriptors in event loops here.
const RawSockets = true

// sendTo sends one datagram on a bare descriptor without waiting.
func sendTo(r *rawFD, b []byte, to netip.AddrPort, v6 bool) error {
	var sa unix.Sockaddr
	if ip := to.Addr(); ip.Is4() && !v6 {
		sa = &unix.SockaddrInet4{Port: int(to.Port()), Addr: ip.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(to.Port()), Addr: ip.As16()}
	}
	var err error
	cerr := r.Control(func(fd uintptr) { err = unix.Sendto(int(fd), b, unix.MSG_DONTWAIT, sa) })
	if cerr != nil {
		return cerr
	}
	return err
}

// FromConn moves the socket of c out of Go's poller: it duplicates the descriptor, closes
// c (which removes c's registration with Go's poller) and returns the duplicate as a bare
// descriptor, for an event loop. The caller gives up c.
func FromConn(c interface {
	SyscallConn() (syscall.RawConn, error)
	Close() error
}, v6 bool) (*Socket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		_ = unix.Close(dup)
		return nil, err
	}
	_ = c.Close()
	r := &rawFD{fd: dup}
	return &Socket{raw: r, rc: r, v6: v6}, nil
}
