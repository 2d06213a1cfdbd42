package mmsg

import (
	"errors"
	"syscall"
)

// singleReader and singleWriter move a batch one datagram per system call, for systems
// without recvmmsg and sendmmsg (every one but Linux); recvOne and sendOne are the system's
// calls (single_unix.go, single_windows.go). They are the Reader and Writer there
// (mmsg_other.go), and run on Linux too, in the tests. A read allocates the source address
// of each datagram (the system call returns it boxed): this path serves a developer's
// laptop, not a relay under load.
type singleReader struct {
	b    *Batch
	n    int
	err  error
	wake int // calls of the read callback within one Read; the runtime waited before each but the first
	wait func(uintptr) bool
}

func newSingleReader() *singleReader {
	r := &singleReader{}
	r.wait = r.tryRead
	return r
}

// read blocks until at least one datagram arrives on rc and reads what is queued into b,
// up to len(b.Bufs) datagrams.
func (r *singleReader) read(rc syscall.RawConn, b *Batch) (int, error) {
	r.b, r.n, r.err, r.wake = b, 0, nil, 0
	if err := rc.Read(r.wait); err != nil {
		return 0, wrapClosed(err)
	}
	return r.n, r.err
}

func (r *singleReader) tryRead(fd uintptr) bool {
	r.wake++
	n, err := r.readQueued(fd, r.b, r.wake > 1)
	if errors.Is(err, syscall.EAGAIN) {
		return false
	}
	r.n, r.err = n, err
	return true
}

// readQueued reads the datagrams queued on fd into b without blocking; it returns
// syscall.EAGAIN when none is. readable says the runtime has just seen fd readable.
func (r *singleReader) readQueued(fd uintptr, b *Batch, readable bool) (int, error) {
	for i := range b.Bufs {
		n, from, trunc, err := recvOne(fd, b.Bufs[i], readable && i == 0)
		if err != nil {
			if i > 0 {
				return i, nil // what was read; a lasting error comes back on the next read
			}
			return 0, err
		}
		b.Lens[i], b.Addrs[i], b.Trunc[i] = n, from, trunc
	}
	return len(b.Bufs), nil
}

// singleWriter sends a batch one datagram per system call.
type singleWriter struct {
	buf  []byte
	dst  sockAddr
	err  error
	send func(uintptr) bool
}

func newSingleWriter() *singleWriter {
	w := &singleWriter{}
	w.send = w.trySend
	return w
}

// write sends the first n datagrams of b on rc; a datagram the system refuses is skipped and
// the rest still go, and the last such error is returned with the count.
func (w *singleWriter) write(rc syscall.RawConn, v6 bool, b *Batch, n int) (int, error) {
	sent := 0
	var lastErr error
	for i := 0; i < n; i++ {
		w.buf, w.err = b.Bufs[i][:b.Lens[i]], nil
		w.dst.set(b.Addrs[i], v6)
		if err := rc.Write(w.send); err != nil {
			return sent, wrapClosed(err)
		}
		if w.err != nil {
			lastErr = w.err
			continue
		}
		sent++
	}
	return sent, lastErr
}

func (w *singleWriter) trySend(fd uintptr) bool {
	err := sendOne(fd, w.buf, &w.dst)
	if errors.Is(err, syscall.EAGAIN) {
		return false
	}
	w.err = err
	return true
}
