//go:build !linux

package mmsg

import (
	"net"
	"net/netip"
	"syscall"
)

// batchSys is empty here: datagrams go one per system call.
type batchSys struct{}

func newBatchSys(int) batchSys { return batchSys{} }

// IsV6 reports whether c is an AF_INET6 socket (IPv4 destinations are then written as
// IPv4-mapped addresses).
func IsV6(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	v6 := false
	_ = rc.Control(func(fd uintptr) { v6 = isV6(fd) })
	return v6
}

// Reader reads batches. It holds the state of one read at a time: give each goroutine its own.
type Reader struct{ r *singleReader }

// NewReader returns a Reader.
func NewReader() *Reader { return &Reader{r: newSingleReader()} }

// Read blocks until at least one datagram arrives on rc and returns how many it read into b.
func (r *Reader) Read(rc syscall.RawConn, b *Batch) (int, error) { return r.r.read(rc, b) }

// TryRead reads what is queued on fd into b without blocking; it returns syscall.EAGAIN when
// nothing is. Use it inside a syscall.RawConn.Read callback.
func (r *Reader) TryRead(fd uintptr, b *Batch) (int, error) { return r.r.readQueued(fd, b, false) }

// Writer writes batches. It holds the state of one write at a time: give each goroutine its
// own.
type Writer struct{ w *singleWriter }

// NewWriter returns a Writer.
func NewWriter() *Writer { return &Writer{w: newSingleWriter()} }

// Write sends the first n datagrams of b (Bufs[i][:Lens[i]] to Addrs[i]) on rc and returns
// how many were sent. v6 says rc is an AF_INET6 socket. A datagram the system refuses (an
// unreachable destination, say) is skipped and the rest still go; the last such error is
// returned with the count.
func (w *Writer) Write(rc syscall.RawConn, v6 bool, b *Batch, n int) (int, error) {
	return w.w.write(rc, v6, b, n)
}

// WriteGSO would send buf as datagrams of seg bytes with UDP GSO, which only Linux has: it
// returns false, and the caller sends the datagrams with Write.
func (w *Writer) WriteGSO(syscall.RawConn, bool, []byte, int, netip.AddrPort) (bool, error) {
	return false, nil
}

// GSOAvailable reports whether the system supports UDP GSO: never outside Linux.
func GSOAvailable() bool { return false }
