package mmsg

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of recvmmsg(2): a msghdr and the length received.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batchSys is the part of a Batch that recvmmsg and sendmmsg take: a message header, an
// iovec and a socket address per datagram.
type batchSys struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
}

func newBatchSys(n int) batchSys {
	return batchSys{hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n)}
}

// IsV6 reports whether c is an AF_INET6 socket (IPv4 destinations are then written as
// IPv4-mapped addresses).
func IsV6(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	domain := 0
	_ = rc.Control(func(fd uintptr) { domain, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) })
	return domain == unix.AF_INET6
}

// Reader reads batches. It holds the state of one read at a time: give each goroutine its own.
type Reader struct {
	b    *Batch
	n    int
	err  error
	wait func(uintptr) bool
}

// NewReader returns a Reader.
func NewReader() *Reader {
	r := &Reader{}
	r.wait = r.tryRead
	return r
}

// Read blocks until at least one datagram arrives on rc and returns how many it read into b.
func (r *Reader) Read(rc syscall.RawConn, b *Batch) (int, error) {
	r.b, r.n, r.err = b, 0, nil
	if err := rc.Read(r.wait); err != nil {
		return 0, wrapClosed(err)
	}
	return r.n, r.err
}

func (r *Reader) tryRead(fd uintptr) bool {
	n, err := r.TryRead(fd, r.b)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	r.n, r.err = n, err
	return true
}

// TryRead reads what is queued on fd into b without blocking; it returns unix.EAGAIN when
// nothing is. Use it inside a syscall.RawConn.Read callback.
func (r *Reader) TryRead(fd uintptr, b *Batch) (int, error) {
	n := len(b.Bufs)
	for i := 0; i < n; i++ {
		b.iovs[i] = unix.Iovec{Base: unsafe.SliceData(b.Bufs[i])} // nil for an empty datagram
		b.iovs[i].SetLen(len(b.Bufs[i]))
		b.hdrs[i] = mmsghdr{}
		b.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
	}
	got, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(n),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	for i := 0; i < int(got); i++ {
		b.Lens[i] = int(b.hdrs[i].len)
		b.Trunc[i] = b.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0
		b.Addrs[i] = parseSockaddr(&b.names[i])
	}
	return int(got), nil
}

// Writer writes batches. It holds the state of one write at a time: give each goroutine its
// own.
type Writer struct {
	b                *Batch
	off, count, done int
	err              error
	send             func(uintptr) bool
	gsoBuf           []byte
	gsoHdr           unix.Msghdr
	gsoIov           unix.Iovec
	gsoName          unix.RawSockaddrInet6
	gsoCmsg          [unix.SizeofCmsghdr + 8]byte
	gsoSend          func(uintptr) bool
}

// NewWriter returns a Writer.
func NewWriter() *Writer {
	w := &Writer{}
	w.send = w.trySend
	w.gsoSend = w.trySendGSO
	return w
}

// Write sends the first n datagrams of b (Bufs[i][:Lens[i]] to Addrs[i]) on rc and returns
// how many were sent. v6 says rc is an AF_INET6 socket. A datagram the kernel refuses (an
// unreachable destination, say) is skipped and the rest still go; the last such error is
// returned with the count.
func (w *Writer) Write(rc syscall.RawConn, v6 bool, b *Batch, n int) (int, error) {
	for i := 0; i < n; i++ {
		b.iovs[i] = unix.Iovec{Base: unsafe.SliceData(b.Bufs[i])} // nil for an empty datagram
		b.iovs[i].SetLen(b.Lens[i])
		b.hdrs[i] = mmsghdr{}
		b.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.hdrs[i].hdr.Namelen = putSockaddr(&b.names[i], b.Addrs[i], v6)
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
	}
	sent := 0
	var lastErr error
	for off := 0; off < n; {
		w.b, w.off, w.count, w.done, w.err = b, off, n-off, 0, nil
		if err := rc.Write(w.send); err != nil {
			return sent, wrapClosed(err)
		}
		if w.err != nil {
			lastErr = w.err
			off++ // skip the datagram the kernel refused
			continue
		}
		off += w.done
		sent += w.done
	}
	return sent, lastErr
}

func (w *Writer) trySend(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.b.hdrs[w.off])), uintptr(w.count),
		unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN {
		return false
	}
	if e != 0 {
		w.err = e
		return true
	}
	w.done = int(r)
	return true
}

// gsoOff is set when the kernel refused UDP GSO once; every Writer falls back to sendmmsg.
var gsoOff atomic.Bool

// WriteGSO sends buf as len(buf)/seg datagrams of seg bytes (the last may be shorter) to dst
// in one system call with UDP GSO (UDP_SEGMENT). It returns false without sending when GSO
// cannot carry this batch: the kernel lacks it, or refused this batch (segments larger than
// the route's MTU, EMSGSIZE or EINVAL; a route without checksum offload, EIO). The caller
// then sends the datagrams with Write, which the kernel fragments where it must.
func (w *Writer) WriteGSO(rc syscall.RawConn, v6 bool, buf []byte, seg int, dst netip.AddrPort) (bool, error) {
	if !GSOAvailable() || seg <= 0 || len(buf) <= seg || (len(buf)+seg-1)/seg > MaxGSOSegments {
		return false, nil
	}
	w.gsoBuf = buf
	w.gsoIov = unix.Iovec{Base: &buf[0]}
	w.gsoIov.SetLen(len(buf))
	w.gsoHdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&w.gsoName)), Iov: &w.gsoIov}
	w.gsoHdr.Namelen = putSockaddr(&w.gsoName, dst, v6)
	w.gsoHdr.SetIovlen(1)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&w.gsoCmsg[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(w.gsoCmsg[unix.SizeofCmsghdr:], uint16(seg))
	w.gsoHdr.Control = &w.gsoCmsg[0]
	w.gsoHdr.SetControllen(unix.CmsgSpace(2))
	w.err = nil
	if err := rc.Write(w.gsoSend); err != nil {
		return true, wrapClosed(err)
	}
	switch {
	case w.err == nil:
		return true, nil
	case errors.Is(w.err, unix.ENOPROTOOPT), errors.Is(w.err, unix.EOPNOTSUPP):
		gsoOff.Store(true) // no GSO in this kernel: never try again
		return false, nil
	case errors.Is(w.err, unix.EMSGSIZE), errors.Is(w.err, unix.EINVAL), errors.Is(w.err, unix.EIO):
		return false, nil // not for this batch or route; nothing was sent
	}
	return true, w.err
}

func (w *Writer) trySendGSO(fd uintptr) bool {
	_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.gsoHdr)), unix.MSG_DONTWAIT)
	if e == unix.EAGAIN {
		return false
	}
	if e != 0 {
		w.err = e
	}
	return true
}

// gsoProbe asks the kernel once whether it knows UDP_SEGMENT (Linux 4.18+).
var gsoProbe sync.Once

// GSOAvailable reports whether the kernel supports UDP GSO (and has not refused it since).
func GSOAvailable() bool {
	gsoProbe.Do(func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return // cannot tell: try, and let a send say
		}
		if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
			gsoOff.Store(true)
		}
		_ = unix.Close(fd)
	})
	return !gsoOff.Load()
}

func parseSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

func putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort, v6 bool) uint32 {
	addr := ap.Addr()
	if addr.Is4() && !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], ap.Port())
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.As16()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	return unix.SizeofSockaddrInet6
}
