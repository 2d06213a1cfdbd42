// Package mmsg reads and writes batches of UDP datagrams without allocating per datagram: on
// Linux with one system call per batch (recvmmsg, sendmmsg, and UDP GSO for runs of
// equal-sized datagrams), elsewhere with one system call per datagram behind the same API.
package mmsg

import (
	"errors"
	"net"
	"net/netip"
)

// Batch holds the buffers, addresses and lengths of up to len(Bufs) datagrams. Reuse it: a
// batch allocates only when created. Bufs may be re-pointed at other memory (for example a
// payload inside another buffer) before a write.
type Batch struct {
	Bufs     [][]byte         // datagram buffers
	Lens     []int            // lengths, set by reads, read by writes
	Addrs    []netip.AddrPort // source (read) or destination (write) addresses
	Trunc    []bool           // set by reads: the datagram was longer than its buffer
	batchSys                  // the system's message headers (mmsg_linux.go), if any
}

// NewBatch makes a batch of n buffers of size bytes each (size 0: no buffers, for batches
// whose Bufs are pointed elsewhere).
func NewBatch(n, size int) *Batch {
	b := &Batch{Bufs: make([][]byte, n), Lens: make([]int, n), Addrs: make([]netip.AddrPort, n),
		Trunc: make([]bool, n), batchSys: newBatchSys(n)}
	if size > 0 {
		for i := range b.Bufs {
			b.Bufs[i] = make([]byte, size)
		}
	}
	return b
}

// MaxGSOSegments is the kernel's limit on segments per GSO send (UDP_MAX_SEGMENTS).
const MaxGSOSegments = 64

func wrapClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return err
}
