package alloc

import (
	"sync"
	"sync/atomic"
)

// watchSlots map the tokens event loops report to the allocations whose relay sockets they
// watch. A token is a slot index and a generation: an event that arrives for a socket
// already closed (its slot freed, maybe reused) carries an old generation and finds nothing.
// Lookups are lock-free.
type watchSlots struct {
	mu     sync.Mutex
	free   []uint32
	next   uint32
	chunks [watchChunks]atomic.Pointer[[watchChunk]watchSlot]
}

const (
	watchChunk  = 4096
	watchChunks = 1024 // up to 4 Mi watched sockets
)

type watchSlot struct {
	gen atomic.Uint32
	a   atomic.Pointer[Allocation]
}

func (w *watchSlots) slot(i uint32) *watchSlot {
	c := w.chunks[i/watchChunk].Load()
	if c == nil {
		return nil
	}
	return &c[i%watchChunk]
}

// take gives a a slot and returns its token; false when every slot is taken.
func (w *watchSlots) take(a *Allocation) (uint64, bool) {
	w.mu.Lock()
	var i uint32
	switch {
	case len(w.free) > 0:
		i = w.free[len(w.free)-1]
		w.free = w.free[:len(w.free)-1]
	case w.next < watchChunk*watchChunks:
		i = w.next
		w.next++
		if w.chunks[i/watchChunk].Load() == nil {
			w.chunks[i/watchChunk].Store(new([watchChunk]watchSlot))
		}
	default:
		w.mu.Unlock()
		return 0, false
	}
	w.mu.Unlock()
	s := w.slot(i)
	gen := s.gen.Add(1)
	s.a.Store(a)
	return uint64(i)<<32 | uint64(gen), true
}

// give frees the slot of token.
func (w *watchSlots) give(token uint64) {
	i := uint32(token >> 32)
	s := w.slot(i)
	s.a.Store(nil)
	s.gen.Add(1)
	w.mu.Lock()
	w.free = append(w.free, i)
	w.mu.Unlock()
}

// lookup returns the allocation of token, or nil when its socket is gone.
func (w *watchSlots) lookup(token uint64) *Allocation {
	s := w.slot(uint32(token >> 32))
	if s == nil || s.gen.Load() != uint32(token) {
		return nil
	}
	return s.a.Load()
}

// RelayReader reads the relay sockets an event loop watches: one per loop, not shared.
type RelayReader struct {
	t    *Table
	pr   *peerReader
	got  int                   // datagrams the last read returned
	read func(fd uintptr) bool // r.tryRead, bound once: a closure per read would allocate
}

// NewRelayReader returns the relay socket reader of one event loop.
func (t *Table) NewRelayReader() *RelayReader {
	r := &RelayReader{t: t, pr: newPeerReader(t)}
	r.read = r.tryRead
	return r
}

func (r *RelayReader) tryRead(fd uintptr) bool {
	r.got, _ = r.pr.r.TryRead(fd, r.pr.in)
	return true
}

// Readable reads one batch from the relay socket of token, if it is still open, and relays
// it to the allocation's client. The loop calls it again while the socket stays readable.
func (r *RelayReader) Readable(token uint64) {
	a := r.t.watch.lookup(token)
	if a == nil || a.relay == nil {
		return
	}
	r.got = 0
	if err := a.relay.rc.Read(r.read); err != nil || r.got <= 0 {
		return
	}
	r.pr.deliver(a, r.got)
}
