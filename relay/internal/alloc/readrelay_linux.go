//go:build linux

package alloc

import (
	"errors"
	"syscall"
)

// readRelay relays what peers send to a's relayed transport address until its socket
// closes. It borrows read buffers only while data is queued, so an idle allocation holds
// none.
func (t *Table) readRelay(a *Allocation) {
	rs := a.relay
	readable := func(fd uintptr) bool {
		for {
			pr := t.readers.Get().(*peerReader)
			n, err := pr.r.TryRead(fd, pr.in)
			if err != nil {
				t.readers.Put(pr)
				return !errors.Is(err, syscall.EAGAIN) // EAGAIN: wait for more; else let Read see it
			}
			pr.deliver(a, n)
			t.readers.Put(pr)
			if n < len(pr.in.Bufs) {
				return false // drained
			}
		}
	}
	for {
		if err := rs.rc.Read(readable); err != nil {
			return // closed
		}
	}
}
