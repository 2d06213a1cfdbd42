//go:build !linux

package alloc

import (
	"errors"
	"net/netip"
	"syscall"
)

// rawFD exists on Linux only; elsewhere every socket is a *net.UDPConn.
type rawFD struct{ onClose func() }

func (r *rawFD) close() {}

// RawSockets reports whether relay sockets can be bare descriptors in event loops here.
const RawSockets = false

var errNoRaw = errors.New("relay: bare sockets need Linux")

func openRawUDP(netip.AddrPort, int) (*Socket, error) { return nil, errNoRaw }

func sendTo(*rawFD, []byte, netip.AddrPort, bool) error { return errNoRaw }

// FromConn needs Linux.
func FromConn(interface {
	SyscallConn() (syscall.RawConn, error)
	Close() error
}, bool) (*Socket, error) {
	return nil, errNoRaw
}
