package check

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/stun/v4"
)

// binding sends a STUN Binding request on the first client.
func (r *run) binding(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, r.opts.timeout())
	defer cancel()
	start := time.Now()
	mapped, err := r.clients[0].binding(ctx)
	if err != nil {
		return r.fail(StepBinding, time.Since(start), r.explain(err))
	}
	r.res.MappedAddress = mapped.String()
	r.pass(StepBinding, time.Since(start), "mapped address "+mapped.String())
	return true
}

// allocate makes two allocations, the second on a connection of its own: the round trip
// runs between them, so no third address takes part.
func (r *run) allocate(ctx context.Context) bool {
	c, ok := r.dial(ctx, false)
	if !ok {
		return false
	}
	r.clients[1] = c
	start := time.Now()
	var first time.Duration
	for i, c := range r.clients {
		actx, cancel := context.WithTimeout(ctx, r.opts.timeout())
		err := c.allocate(actx)
		cancel()
		if err != nil {
			return r.fail(StepAllocate, time.Since(start), r.explain(err))
		}
		if i == 0 {
			first = time.Since(start)
		}
	}
	a, b := r.clients[0].relay.LocalAddr(), r.clients[1].relay.LocalAddr()
	r.res.RelayedAddress = a.String()
	r.pass(StepAllocate, first, fmt.Sprintf("relayed addresses %s and %s (realm %q)", a, b, r.clients[0].realm))
	return true
}

// permission installs a permission on each allocation for the other's relayed address
// (CreatePermission, RFC 8656 §9), by sending it a first datagram as browsers do.
func (r *run) permission(context.Context) bool {
	start := time.Now()
	for i, c := range r.clients {
		peer := r.clients[1-i].relay.LocalAddr()
		if err := c.relay.SetWriteDeadline(time.Now().Add(r.opts.timeout())); err != nil {
			return r.fail(StepPermission, time.Since(start), err)
		}
		if _, err := c.relay.WriteTo([]byte("ferry check: permission"), peer); err != nil {
			return r.fail(StepPermission, time.Since(start), r.explainPeer(err, peer))
		}
	}
	r.pass(StepPermission, time.Since(start), "each allocation permits the other's relayed address")
	return true
}

// roundTrip sends a datagram from the first relayed address to the second and back; a lost
// datagram is sent again, three times at most within the timeout.
func (r *run) roundTrip() bool {
	payload := make([]byte, 100)
	_, _ = rand.Read(payload)
	start := time.Now()
	wait := r.opts.timeout() / 3
	hops := [][2]int{{0, 1}, {1, 0}}
	for _, hop := range hops {
		from, to := r.clients[hop[0]], r.clients[hop[1]]
		var err error
		for range 3 {
			if _, err = from.relay.WriteTo(payload, to.relay.LocalAddr()); err != nil {
				break
			}
			if err = receive(to.relay, payload, from.relay.LocalAddr(), wait); err == nil {
				break
			}
		}
		if err != nil {
			return r.fail(StepRoundTrip, time.Since(start), fmt.Errorf("%d bytes from %s did not reach %s through the relay: %v",
				len(payload), from.relay.LocalAddr(), to.relay.LocalAddr(), err))
		}
	}
	r.pass(StepRoundTrip, time.Since(start), fmt.Sprintf("%d bytes each way between the relayed addresses", len(payload)))
	return true
}

// receive reads from relay until want arrives from peer, or wait passes.
func receive(relay net.PacketConn, want []byte, peer net.Addr, wait time.Duration) error {
	_ = relay.SetReadDeadline(time.Now().Add(wait))
	defer relay.SetReadDeadline(time.Time{})
	buf := make([]byte, 1500)
	for {
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("nothing within %s", wait)
			}
			return err
		}
		if bytes.Equal(buf[:n], want) && from.String() == peer.String() {
			return nil
		}
	}
}

// refresh refreshes the first allocation for 600 s.
func (r *run) refresh(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, r.opts.timeout())
	defer cancel()
	start := time.Now()
	got, err := r.clients[0].refresh(ctx, 600)
	if err != nil {
		return r.fail(StepRefresh, time.Since(start), r.explain(err))
	}
	r.pass(StepRefresh, time.Since(start), fmt.Sprintf("lifetime %d s", got))
	return true
}

// delete deletes both allocations (Refresh with LIFETIME 0) and proves the first is gone: a
// further Refresh must get 437 Allocation Mismatch.
func (r *run) delete(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, r.opts.timeout())
	defer cancel()
	start := time.Now()
	for _, c := range r.clients {
		if _, err := c.refresh(ctx, 0); err != nil {
			return r.fail(StepDelete, time.Since(start), r.explain(err))
		}
		c.deleted = true
	}
	took := time.Since(start)
	_, err := r.clients[0].refresh(ctx, 600)
	var te *stun.TurnError
	if !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeAllocMismatch {
		return r.fail(StepDelete, took, fmt.Errorf("a Refresh after the deletion got %v, not 437 Allocation Mismatch: the allocation lives on", err))
	}
	r.pass(StepDelete, took, "both allocations deleted (a further Refresh gets 437)")
	return true
}
