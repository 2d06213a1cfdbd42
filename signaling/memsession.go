package signaling

import (
	"context"

	"github.com/ferryrelay/ferry/auth"
)

// memSession is one connection's membership in a MemoryRooms room.
type memSession struct {
	m   *MemoryRooms
	r   *room
	p   *participant
	gen uint64
}

// current reports whether the session still speaks for its participant; call with m.mu held.
func (s *memSession) current() bool {
	return !s.m.done && s.r.parts[s.p.id] == s.p && s.p.gen == s.gen
}

// lock takes the rooms' mutex and checks the session; unlock with s.m.mu.Unlock.
func (s *memSession) lock() error {
	s.m.mu.Lock()
	if !s.current() {
		s.m.mu.Unlock()
		return ErrStale
	}
	return nil
}

// Relay implements Session.
func (s *memSession) Relay(_ context.Context, to string, msg Relayed) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.m.mu.Unlock()
	if s.p.waiting {
		return ErrNotAdmitted // whatever "to" says: a waiting guest learns no ids
	}
	t := s.r.parts[to]
	if t == nil || t == s.p || t.waiting {
		return ErrNoSuchPeer
	}
	data, err := encodeRelayed(s.p.id, t.seq+1, msg)
	if err != nil {
		return err
	}
	if len(t.outbox) >= s.m.cfg.OutboxMessages || t.outBytes+len(data) > s.m.cfg.OutboxBytes {
		return ErrUndeliverable
	}
	t.seq++
	t.outbox = append(t.outbox, outMsg{seq: t.seq, data: data})
	t.outBytes += len(data)
	if t.conn != nil {
		t.conn.Deliver(Event{Type: typeRelayed, Seq: t.seq, Data: data})
	}
	return nil
}

// guest finds guest id for a host's admit, deny or return.
func (s *memSession) guest(id string) (*participant, error) {
	if s.p.role != auth.RoleHost {
		return nil, ErrNotAllowed
	}
	g := s.r.parts[id]
	if g == nil || g == s.p {
		return nil, ErrNoSuchPeer
	}
	if g.role != auth.RoleGuest {
		return nil, ErrNotAllowed
	}
	return g, nil
}

// Admit implements Session.
func (s *memSession) Admit(_ context.Context, id string) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.m.mu.Unlock()
	g, err := s.guest(id)
	if err != nil {
		return err
	}
	if !g.waiting {
		return ErrNoSuchPeer
	}
	if admitted, _ := s.r.counts(); admitted >= s.r.capacity {
		return ErrRoomFull
	}
	g.waiting = false
	if g.conn != nil {
		g.conn.Deliver(Event{Type: TypeAdmitted, Peers: s.m.joined(s.r, g, false).Peers})
	}
	s.m.toAdmitted(s.r, g, Event{Type: TypePeerJoined, Peer: g.info()})
	return nil
}

// Deny implements Session.
func (s *memSession) Deny(_ context.Context, id string) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.m.mu.Unlock()
	g, err := s.guest(id)
	if err != nil {
		return err
	}
	s.r.denied[g.key] = true
	if g.conn != nil {
		g.conn.Deliver(Event{Type: TypeDenied, Close: &CloseDenied})
	}
	s.m.remove(s.r, g, LeftDenied)
	return nil
}

// Return implements Session.
func (s *memSession) Return(_ context.Context, id string) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.m.mu.Unlock()
	g, err := s.guest(id)
	if err != nil {
		return err
	}
	if g.waiting {
		return ErrNoSuchPeer
	}
	s.m.toAdmitted(s.r, g, Event{Type: TypePeerLeft, Peer: g.info(), Reason: LeftReturned})
	g.waiting = true
	g.outbox, g.outBytes = nil, 0 // nothing relayed before the return reaches a waiting guest
	if g.conn != nil {
		g.conn.Deliver(Event{Type: TypeReturned})
	}
	s.m.toHosts(s.r, g, Event{Type: TypeKnock, Peer: g.info()})
	return nil
}

// SetName implements Session.
func (s *memSession) SetName(_ context.Context, name string) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.m.mu.Unlock()
	if s.p.nameFromToken {
		return ErrNotAllowed
	}
	s.p.name = name
	if s.p.waiting {
		s.m.toHosts(s.r, s.p, Event{Type: TypeKnock, Peer: s.p.info()})
	} else {
		s.m.toAdmitted(s.r, s.p, Event{Type: TypePeerName, Peer: s.p.info()})
	}
	return nil
}

// End implements Session.
func (s *memSession) End(context.Context) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.m.mu.Unlock()
	if s.p.role != auth.RoleHost {
		return ErrNotAllowed
	}
	s.m.end(s.r) // remembered as ended until validUntil, so its links stay refused
	return nil
}

// Confirm implements Session.
func (s *memSession) Confirm(seq uint64) {
	if s.lock() != nil {
		return
	}
	defer s.m.mu.Unlock()
	n := 0
	for n < len(s.p.outbox) && s.p.outbox[n].seq <= seq {
		s.p.outBytes -= len(s.p.outbox[n].data)
		n++
	}
	s.p.outbox = append(s.p.outbox[:0], s.p.outbox[n:]...)
}

// Leave implements Session.
func (s *memSession) Leave(left bool) {
	if s.lock() != nil {
		return
	}
	defer s.m.mu.Unlock()
	p := s.p
	if left || s.m.cfg.ReconnectGrace < 0 {
		s.m.remove(s.r, p, map[bool]string{true: LeftClosed, false: LeftTimeout}[left])
		return
	}
	p.conn = nil
	gen := p.gen
	p.stopGrace = s.m.clock.AfterFunc(s.m.cfg.ReconnectGrace, func() {
		s.m.mu.Lock()
		defer s.m.mu.Unlock()
		if !s.m.done && p.conn == nil && p.gen == gen {
			s.m.remove(s.r, p, LeftTimeout)
		}
	})
}
