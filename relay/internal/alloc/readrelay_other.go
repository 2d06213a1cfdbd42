//go:build !linux

package alloc

import (
	"errors"
	"net"
)

// readRelay relays what peers send to a's relayed transport address until its socket
// closes. Outside Linux (a developer's laptop) it keeps its read buffers while it waits.
func (t *Table) readRelay(a *Allocation) {
	pr := newPeerReader(t)
	for {
		n, err := pr.r.Read(a.relay.rc, pr.in)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			pr.deliver(a, n)
		}
	}
}
