//go:build !unix && !windows

package mmsg

import (
	"errors"
	"net/netip"
)

// errUnsupported: this system has no UDP sockets Ferry can use (js, wasip1, plan9).
var errUnsupported = errors.New("mmsg: UDP sockets are not supported on this system")

func recvOne(uintptr, []byte, bool) (int, netip.AddrPort, bool, error) {
	return 0, netip.AddrPort{}, false, errUnsupported
}

func sendOne(uintptr, []byte, *sockAddr) error { return errUnsupported }

type sockAddr struct{}

func (*sockAddr) set(netip.AddrPort, bool) {}

func isV6(uintptr) bool { return false }
