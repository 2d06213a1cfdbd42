package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/ferryrelay/ferry/signaling"
)

// session is one connection's membership in a room shared through Redis.
type session struct {
	r   *Rooms
	lr  *lroom
	lp  *lpart
	gen uint64
}

// current reports whether the session still speaks for its participant; call with r.mu held.
func (s *session) current() bool {
	return !s.r.done && s.r.rooms[s.lr.id] == s.lr && s.lr.parts[s.lp.id] == s.lp && s.lp.gen == s.gen
}

// Relay implements signaling.Session. It needs no Redis for participants on this instance;
// to another instance's participant it publishes the message, which that instance numbers
// and keeps until its client confirms it.
func (s *session) Relay(ctx context.Context, to string, m signaling.Relayed) error {
	r := s.r
	r.mu.Lock()
	if !s.current() {
		r.mu.Unlock()
		return signaling.ErrStale
	}
	snap := s.lr.snap
	if me := snap.part(s.lp.id); me == nil || me.Waiting {
		r.mu.Unlock()
		return signaling.ErrNotAdmitted // whatever "to" says: a waiting guest learns no ids
	}
	t := snap.part(to)
	if t == nil || to == s.lp.id || t.Waiting {
		r.mu.Unlock()
		return signaling.ErrNoSuchPeer
	}
	if lp := s.lr.parts[to]; lp != nil && t.Inst == r.inst {
		err := r.deliverRelay(s.lr, lp, s.lp.id, m)
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	data, err := json.Marshal(relayMsg{Kind: "relay", Room: s.lr.id, From: s.lp.id, To: to, Msg: m})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*commandTimeout)
	defer cancel()
	// No receiver: that instance is not subscribed (gone, or reconnecting to Redis).
	if n, err := r.rdb.Publish(ctx, instanceChannel+t.Inst, data).Result(); err != nil || n == 0 {
		r.msgs.WithLabelValues("lost").Inc()
		return signaling.ErrUnavailable
	}
	r.msgs.WithLabelValues("relay_out").Inc()
	return nil
}

// act runs a host's or a participant's change in Redis.
func (s *session) act(ctx context.Context, op, target string) error {
	s.r.mu.Lock()
	ok := s.current()
	s.r.mu.Unlock()
	if !ok {
		return signaling.ErrStale
	}
	m, err := s.r.change(ctx, roomRequest{Op: op, Room: s.lr.id, PID: s.lp.id, Gen: s.gen, Target: target})
	if err != nil {
		if errors.Is(err, errRedis) {
			s.r.log.Warn("room change failed: Redis cannot be reached", "op", op, "err", err)
		}
		return sessionError(err)
	}
	s.r.offer(m)
	return nil
}

// Admit implements signaling.Session.
func (s *session) Admit(ctx context.Context, id string) error { return s.act(ctx, "admit", id) }

// Deny implements signaling.Session.
func (s *session) Deny(ctx context.Context, id string) error { return s.act(ctx, "deny", id) }

// Return implements signaling.Session.
func (s *session) Return(ctx context.Context, id string) error { return s.act(ctx, "return", id) }

// End implements signaling.Session.
func (s *session) End(ctx context.Context) error { return s.act(ctx, "end", "") }

// SetName implements signaling.Session. The name goes with the change's message, never
// into Redis's keys.
func (s *session) SetName(ctx context.Context, name string) error {
	s.r.mu.Lock()
	if !s.current() {
		s.r.mu.Unlock()
		return signaling.ErrStale
	}
	if s.lp.nameFromToken {
		s.r.mu.Unlock()
		return signaling.ErrNotAllowed
	}
	old := s.lp.name
	s.lp.name = name
	s.r.mu.Unlock()
	err := s.act(ctx, "name", "")
	if err != nil {
		s.r.mu.Lock()
		if s.lp.name == name {
			s.lp.name = old
		}
		s.r.mu.Unlock()
	}
	return err
}

// Confirm implements signaling.Session.
func (s *session) Confirm(seq uint64) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if !s.current() {
		return
	}
	lp := s.lp
	n := 0
	for n < len(lp.outbox) && lp.outbox[n].Seq <= seq {
		lp.outBytes -= len(lp.outbox[n].Data)
		n++
	}
	lp.outbox = append(lp.outbox[:0], lp.outbox[n:]...)
}

// Leave implements signaling.Session. A participant that said goodbye leaves at once; one
// whose connection dropped keeps its place here for the reconnect grace (in Redis: away),
// and can take it over on any instance.
func (s *session) Leave(left bool) {
	r := s.r
	r.mu.Lock()
	if !s.current() {
		r.mu.Unlock()
		return
	}
	lp, gen := s.lp, s.gen
	lp.conn = nil
	q := roomRequest{Op: "leave", Room: s.lr.id, PID: lp.id, Gen: gen, Why: signaling.LeftClosed}
	if !left && r.lim.ReconnectGrace >= 0 {
		q = roomRequest{Op: "away", Room: s.lr.id, PID: lp.id, Gen: gen, Seq: lp.seq}
		lr := s.lr
		lp.stopGrace = time.AfterFunc(r.lim.ReconnectGrace, func() { r.graceOver(lr, lp, gen) }).Stop
	} else if !left {
		q.Why = signaling.LeftTimeout
	}
	r.mu.Unlock()
	r.run(q)
}

// graceOver removes a participant that did not come back within the grace.
func (r *Rooms) graceOver(lr *lroom, lp *lpart, gen uint64) {
	r.mu.Lock()
	if r.done || lr.parts[lp.id] != lp || lp.gen != gen || lp.conn != nil || lp.next != nil {
		r.mu.Unlock()
		return
	}
	lp.stopGrace = nil
	r.mu.Unlock()
	r.run(roomRequest{Op: "leave", Room: lr.id, PID: lp.id, Gen: gen, Why: signaling.LeftTimeout})
}

// run makes a change that must happen eventually: when Redis cannot take it now, it is
// tried again every beat.
func (r *Rooms) run(q roomRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	m, err := r.change(ctx, q)
	switch {
	case errors.Is(err, errRedis):
		r.log.Warn("room change postponed: Redis cannot be reached", "op", q.Op, "err", err)
		r.later(q)
	case err == nil:
		r.offer(m)
	}
}
