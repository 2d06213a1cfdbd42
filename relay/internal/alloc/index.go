package alloc

import (
	"sync"
	"sync/atomic"
)

// index maps 5-tuples to allocations. Readers (a datagram's lookup on the data path) load a
// shard's map without locking; writers copy the shard under its lock. With 256 shards a
// write copies a few dozen entries at 10,000 allocations.
type index struct {
	shards [256]indexShard
}

type indexShard struct {
	mu sync.Mutex
	m  atomic.Pointer[map[Key]*Allocation]
	_  [40]byte // keep shards on their own cache lines
}

// shard picks a shard from the client's port and the last byte of its address: cheap, and
// spread well because clients' source ports vary.
func (x *index) shard(k Key) *indexShard {
	a := k.Client.Addr().As16()
	return &x.shards[(uint(k.Client.Port())^uint(a[15])^uint(a[14])<<3)&255]
}

func (x *index) get(k Key) *Allocation {
	if m := x.shard(k).m.Load(); m != nil {
		return (*m)[k]
	}
	return nil
}

// put adds a under k unless k is taken; it reports whether it added.
func (x *index) put(k Key, a *Allocation) bool {
	s := x.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old != nil {
		if _, taken := (*old)[k]; taken {
			return false
		}
	}
	next := make(map[Key]*Allocation, 1+mapLen(old))
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[k] = a
	s.m.Store(&next)
	return true
}

// remove deletes k if it maps to a.
func (x *index) remove(k Key, a *Allocation) {
	s := x.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old == nil || (*old)[k] != a {
		return
	}
	next := make(map[Key]*Allocation, len(*old))
	for k, v := range *old {
		if v != a {
			next[k] = v
		}
	}
	s.m.Store(&next)
}

// each calls f for every allocation of a snapshot.
func (x *index) each(f func(*Allocation)) {
	for i := range x.shards {
		if m := x.shards[i].m.Load(); m != nil {
			for _, a := range *m {
				f(a)
			}
		}
	}
}

func mapLen(m *map[Key]*Allocation) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
