//go:build !linux

package sockopt

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// MaxUDPSockets bounds the sockets ListenUDP opens for one address.
const MaxUDPSockets = 64

// ListenUDP opens one UDP socket on addr: without Linux's SO_REUSEPORT load balancing, n is
// ignored. bufBytes > 0 sets its receive and send buffers.
func ListenUDP(ctx context.Context, network, addr string, _, bufBytes int) ([]*net.UDPConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("relay: listen udp %s: %w", addr, err)
	}
	c := pc.(*net.UDPConn)
	if bufBytes > 0 {
		if _, err := SetSocketBuffers(c, bufBytes); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("relay: listen udp %s: %w", addr, err)
		}
	}
	return []*net.UDPConn{c}, nil
}

type bufferSetter interface {
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
}

// SetSocketBuffers asks for receive and send buffers of bytes each. It cannot read back what
// the system granted here and returns bytes.
func SetSocketBuffers(c syscall.Conn, bytes int) (int, error) {
	s, ok := c.(bufferSetter)
	if !ok {
		return 0, fmt.Errorf("socket buffers: %T has none", c)
	}
	if err := s.SetReadBuffer(bytes); err != nil {
		return 0, fmt.Errorf("socket buffers: %w", err)
	}
	if err := s.SetWriteBuffer(bytes); err != nil {
		return 0, fmt.Errorf("socket buffers: %w", err)
	}
	return bytes, nil
}

// SetSocketBuffersQuick is SetSocketBuffers.
func SetSocketBuffersQuick(c syscall.Conn, bytes int) error {
	_, err := SetSocketBuffers(c, bytes)
	return err
}

// ReuseAddrPort does nothing here: RFC 6062 Connect from a TCP relayed transport address
// needs Linux.
func ReuseAddrPort(_, _ string, _ syscall.RawConn) error { return nil }
