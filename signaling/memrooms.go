package signaling

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for MemoryRoomsConfig's zero values.
const (
	DefaultReconnectGrace = 30 * time.Second
	DefaultParticipants   = 2
	DefaultWaiting        = 4
	DefaultMaxGuests      = 8
	DefaultMaxRooms       = 10000
	DefaultOutboxMessages = 256
	DefaultOutboxBytes    = 1 << 20
)

// MemoryRoomsConfig configures MemoryRooms.
type MemoryRoomsConfig struct {
	// NoWaitingRoom admits guests as they join; by default they wait for a host's admit.
	NoWaitingRoom bool
	// ReconnectGrace keeps a dropped participant's place (same id, same state) this long.
	// Zero means DefaultReconnectGrace; negative means no grace.
	ReconnectGrace time.Duration
	// Participants is how many may be admitted at once (hosts included) when the token says
	// no maxGuests; Waiting how many guests may wait; MaxGuests caps a token's maxGuests
	// (a room then admits maxGuests+1). MaxRooms bounds the rooms held at once.
	Participants, Waiting, MaxGuests, MaxRooms int
	// OutboxMessages and OutboxBytes bound the relayed messages kept per participant until
	// its client confirms them (and across a reconnect); beyond, senders get ErrUndeliverable.
	OutboxMessages, OutboxBytes int
	// Clock is the time source; nil means the real clock.
	Clock Clock
	// Registerer, if not nil, gets ferry_rooms_active and ferry_room_participants{state}.
	Registerer prometheus.Registerer
}

// MemoryRooms keeps rooms in this process's memory only: nothing is written anywhere.
// One mutex guards every room; Conn.Deliver never blocks, so critical sections are short.
type MemoryRooms struct {
	cfg   MemoryRoomsConfig
	clock Clock
	mu    sync.Mutex
	rooms map[string]*room
	order uint64
	done  bool
}

// NewMemoryRooms returns empty in-memory rooms.
func NewMemoryRooms(cfg MemoryRoomsConfig) (*MemoryRooms, error) {
	cfg.ReconnectGrace = cmp.Or(cfg.ReconnectGrace, DefaultReconnectGrace)
	cfg.Participants = cmp.Or(cfg.Participants, DefaultParticipants)
	cfg.Waiting = cmp.Or(cfg.Waiting, DefaultWaiting)
	cfg.MaxGuests = cmp.Or(cfg.MaxGuests, DefaultMaxGuests)
	cfg.MaxRooms = cmp.Or(cfg.MaxRooms, DefaultMaxRooms)
	cfg.OutboxMessages = cmp.Or(cfg.OutboxMessages, DefaultOutboxMessages)
	cfg.OutboxBytes = cmp.Or(cfg.OutboxBytes, DefaultOutboxBytes)
	m := &MemoryRooms{cfg: cfg, clock: cfg.Clock, rooms: map[string]*room{}}
	if m.clock == nil {
		m.clock = realClock{}
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(roomGauges{m}); err != nil {
			return nil, fmt.Errorf("signaling: rooms metrics: %w", err)
		}
	}
	return m, nil
}

type room struct {
	id         string
	validUntil time.Time
	capacity   int // admitted at once
	parts      map[string]*participant
	byKey      map[string]*participant
	oneVisit   map[string]bool // used jti
	denied     map[string]bool // keys of denied links
	ended      bool
	stopEnd    func() bool
}

type participant struct {
	id, key, role, name string
	nameFromToken       bool
	waiting             bool
	order               uint64 // join order, for stable peer lists
	conn                Conn   // nil while reconnecting
	gen                 uint64 // connection generation: a session of an older one is stale
	stopGrace           func() bool
	seq                 uint64
	outbox              []outMsg
	outBytes            int
}

type outMsg struct {
	seq  uint64
	data []byte
}

func (p *participant) info() PeerInfo { return PeerInfo{ID: p.id, Role: p.role, Name: p.name} }

// Join implements Rooms.
func (m *MemoryRooms) Join(_ context.Context, t Ticket, c Conn) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return nil, &Refusal{CloseGoingAway}
	}
	r, err := m.room(t)
	if err != nil {
		return nil, err
	}
	if p := r.byKey[t.Key]; p != nil {
		return m.takeOver(r, p, c), nil
	}
	p, err := m.admitNew(r, t)
	if err != nil {
		m.maybeDelete(r)
		return nil, err
	}
	p.conn, p.gen = c, 1
	c.Deliver(Event{Type: TypeWelcome, Joined: m.joined(r, p, false)})
	m.sendKnocks(r, p)
	if p.waiting {
		m.toHosts(r, p, Event{Type: TypeKnock, Peer: p.info()})
	} else {
		m.toAdmitted(r, p, Event{Type: TypePeerJoined, Peer: p.info()})
	}
	return &memSession{m: m, r: r, p: p, gen: p.gen}, nil
}

// room finds or creates the ticket's room and applies the ticket's validity and size.
func (m *MemoryRooms) room(t Ticket) (*room, error) {
	now := m.clock.Now()
	r := m.rooms[t.Room]
	if r == nil {
		if !t.ValidUntil.After(now) {
			return nil, &Refusal{CloseEnded}
		}
		if t.ExistingOnly {
			return nil, &Refusal{CloseDraining}
		}
		if len(m.rooms) >= m.cfg.MaxRooms {
			return nil, &Refusal{CloseServerFull}
		}
		r = &room{id: t.Room, capacity: m.cfg.Participants, parts: map[string]*participant{},
			byKey: map[string]*participant{}, oneVisit: map[string]bool{}, denied: map[string]bool{}}
		m.rooms[t.Room] = r
	}
	if err := r.refusal(t); err != nil {
		return nil, err
	}
	if t.ValidUntil.After(r.validUntil) {
		r.validUntil = t.ValidUntil
		if r.stopEnd != nil {
			r.stopEnd()
		}
		r.stopEnd = m.clock.AfterFunc(r.validUntil.Sub(now), func() { m.expire(r) })
	}
	if t.MaxGuests > 0 {
		r.capacity = max(r.capacity, min(t.MaxGuests, m.cfg.MaxGuests)+1)
	}
	return r, nil
}

// refusal is why the room refuses t's link (Join's rules), or nil: the room was ended, the
// link was denied, or it is a used one-visit link whose participant has gone (a link whose
// participant is still here takes its place over).
func (r *room) refusal(t Ticket) error {
	switch {
	case r.ended:
		return &Refusal{CloseEnded}
	case r.denied[t.Key]:
		return &Refusal{CloseDenied}
	case r.byKey[t.Key] != nil:
		return nil
	case t.OneVisit != "" && r.oneVisit[t.OneVisit]:
		return &Refusal{CloseLinkUsed}
	}
	return nil
}

// Admissible implements Rooms.
func (m *MemoryRooms) Admissible(_ context.Context, t Ticket) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.rooms[t.Room]; r != nil {
		return r.refusal(t)
	}
	return nil
}

// admitNew checks the room's limits for a new participant and records its one-visit link.
func (m *MemoryRooms) admitNew(r *room, t Ticket) (*participant, error) {
	waiting := t.Role == auth.RoleGuest && !m.cfg.NoWaitingRoom
	admitted, queued := r.counts()
	if waiting && queued >= m.cfg.Waiting || !waiting && admitted >= r.capacity {
		return nil, &Refusal{CloseRoomFull}
	}
	m.order++
	p := &participant{id: newParticipantID(), key: t.Key, role: t.Role, name: t.Name,
		nameFromToken: t.Name != "", waiting: waiting, order: m.order}
	r.parts[p.id], r.byKey[p.key] = p, p
	if t.OneVisit != "" {
		r.oneVisit[t.OneVisit] = true
	}
	return p, nil
}

// takeOver moves participant p to connection c: same id, same state, unconfirmed relayed
// messages again, and peer-reconnected to the others.
func (m *MemoryRooms) takeOver(r *room, p *participant, c Conn) Session {
	if p.stopGrace != nil {
		p.stopGrace()
		p.stopGrace = nil
	}
	if p.conn != nil {
		p.conn.Deliver(Event{Close: &CloseReplaced})
	}
	p.conn = c
	p.gen++
	c.Deliver(Event{Type: TypeWelcome, Joined: m.joined(r, p, true)})
	m.sendKnocks(r, p)
	for _, o := range p.outbox {
		c.Deliver(Event{Type: typeRelayed, Seq: o.seq, Data: o.data})
	}
	if !p.waiting {
		m.toAdmitted(r, p, Event{Type: TypePeerReconnected, Peer: p.info()})
	}
	return &memSession{m: m, r: r, p: p, gen: p.gen}
}

func (m *MemoryRooms) joined(r *room, p *participant, reconnected bool) *Joined {
	j := &Joined{ID: p.id, Role: p.role, Name: p.name, Waiting: p.waiting, Reconnected: reconnected,
		ValidUntil: r.validUntil, Peers: []PeerInfo{}}
	if !p.waiting {
		for _, o := range r.sorted() {
			if o != p && !o.waiting {
				j.Peers = append(j.Peers, o.info())
			}
		}
	}
	return j
}

// sendKnocks tells a host that joins about every guest already waiting.
func (m *MemoryRooms) sendKnocks(r *room, p *participant) {
	if p.role != auth.RoleHost {
		return
	}
	for _, o := range r.sorted() {
		if o.waiting {
			p.conn.Deliver(Event{Type: TypeKnock, Peer: o.info()})
		}
	}
}

// counts returns the admitted and the waiting participants, reconnecting ones included.
func (r *room) counts() (admitted, waiting int) {
	for _, p := range r.parts {
		if p.waiting {
			waiting++
		} else {
			admitted++
		}
	}
	return admitted, waiting
}

func (r *room) sorted() []*participant {
	out := make([]*participant, 0, len(r.parts))
	for _, p := range r.parts {
		out = append(out, p)
	}
	for i := 1; i < len(out); i++ { // few participants: insertion sort by join order
		for j := i; j > 0 && out[j].order < out[j-1].order; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// toAdmitted delivers ev to every connected admitted participant but except.
func (m *MemoryRooms) toAdmitted(r *room, except *participant, ev Event) {
	for _, o := range r.sorted() {
		if o != except && !o.waiting && o.conn != nil {
			o.conn.Deliver(ev)
		}
	}
}

// toHosts delivers ev to every connected host but except.
func (m *MemoryRooms) toHosts(r *room, except *participant, ev Event) {
	for _, o := range r.sorted() {
		if o != except && o.role == auth.RoleHost && o.conn != nil {
			o.conn.Deliver(ev)
		}
	}
}

// remove takes p out of the room and tells those who knew of it.
func (m *MemoryRooms) remove(r *room, p *participant, reason string) {
	if r.parts[p.id] != p {
		return
	}
	delete(r.parts, p.id)
	delete(r.byKey, p.key)
	if p.stopGrace != nil {
		p.stopGrace()
	}
	p.conn, p.outbox = nil, nil
	ev := Event{Type: TypePeerLeft, Peer: p.info(), Reason: reason}
	if p.waiting {
		m.toHosts(r, p, ev)
	} else {
		m.toAdmitted(r, p, ev)
	}
	m.maybeDelete(r)
}

// maybeDelete forgets an empty room unless it must remember something until its end: that
// it was ended, a used one-visit link, a denied link.
func (m *MemoryRooms) maybeDelete(r *room) {
	if len(r.parts) > 0 || r.ended || len(r.oneVisit) > 0 || len(r.denied) > 0 {
		return
	}
	if r.stopEnd != nil {
		r.stopEnd()
	}
	if m.rooms[r.id] == r {
		delete(m.rooms, r.id)
	}
}

// end sends everyone ended and closes their connections.
func (m *MemoryRooms) end(r *room) {
	r.ended = true
	for _, p := range r.sorted() {
		if p.conn != nil {
			p.conn.Deliver(Event{Type: TypeEnded, Close: &CloseEnded})
		}
		if p.stopGrace != nil {
			p.stopGrace()
		}
		delete(r.parts, p.id)
		delete(r.byKey, p.key)
	}
}

// expire ends a room at its validUntil and forgets it.
func (m *MemoryRooms) expire(r *room) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms[r.id] != r || m.clock.Now().Before(r.validUntil) {
		return // replaced, or extended after the timer fired
	}
	m.end(r)
	delete(m.rooms, r.id)
}

// Close implements Rooms.
func (m *MemoryRooms) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = true
	for id, r := range m.rooms {
		if r.stopEnd != nil {
			r.stopEnd()
		}
		for _, p := range r.parts {
			if p.stopGrace != nil {
				p.stopGrace()
			}
		}
		delete(m.rooms, id)
	}
	return nil
}

func newParticipantID() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// roomGauges reports rooms and participants at scrape time, so the numbers cannot drift.
type roomGauges struct{ m *MemoryRooms }

var (
	roomsDesc = prometheus.NewDesc("ferry_rooms_active",
		"Rooms held in memory (with participants, or remembering an end or a used link until validUntil).", nil, nil)
	participantsDesc = prometheus.NewDesc("ferry_room_participants",
		"Room participants by state: admitted, waiting, reconnecting (within the grace).", []string{"state"}, nil)
)

func (g roomGauges) Describe(ch chan<- *prometheus.Desc) { ch <- roomsDesc; ch <- participantsDesc }

func (g roomGauges) Collect(ch chan<- prometheus.Metric) {
	g.m.mu.Lock()
	rooms := len(g.m.rooms)
	var admitted, waiting, reconnecting int
	for _, r := range g.m.rooms {
		for _, p := range r.parts {
			switch {
			case p.conn == nil:
				reconnecting++
			case p.waiting:
				waiting++
			default:
				admitted++
			}
		}
	}
	g.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(roomsDesc, prometheus.GaugeValue, float64(rooms))
	for state, n := range map[string]int{"admitted": admitted, "waiting": waiting, "reconnecting": reconnecting} {
		ch <- prometheus.MustNewConstMetric(participantsDesc, prometheus.GaugeValue, float64(n), state)
	}
}
