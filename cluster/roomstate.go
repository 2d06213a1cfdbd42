package cluster

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling"
)

// stateMsg is a room's state after a change, with the events it causes (rooms.lua).
type stateMsg struct {
	Room   string            `json:"room"`
	V      uint64            `json:"v"`
	Until  int64             `json:"u"` // Unix ms
	Cap    int               `json:"cap"`
	Ended  bool              `json:"e"`
	Parts  list[partState]   `json:"parts"`
	Events list[roomEvent]   `json:"ev"`
	Names  map[string]string `json:"names"`
}

// list is a JSON array that Lua's cjson may encode, when empty, as {}.
type list[T any] []T

func (l *list[T]) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		*l = nil
		return nil
	}
	return json.Unmarshal(b, (*[]T)(l))
}

// partState is a participant in a stateMsg.
type partState struct {
	ID      string `json:"id"`
	Role    string `json:"r"`
	Waiting bool   `json:"w"`
	Order   int    `json:"o"`
	Inst    string `json:"i"`
	Gen     uint64 `json:"g"`
	Away    bool   `json:"a"`
	Seq     uint64 `json:"s"`
}

// roomEvent is an event for participant To on instance Inst.
type roomEvent struct {
	To          string `json:"to"`
	Inst        string `json:"i"`
	Type        string `json:"t"`
	Peer        string `json:"p"`  // the participant it is about
	PeerRole    string `json:"pr"` // its role
	Why         string `json:"why"`
	Gen         uint64 `json:"g"`  // welcome: the new generation; replaced: the old one
	Reconnected bool   `json:"rc"` // welcome
}

func (m *stateMsg) welcomeFor(inst string) *roomEvent {
	for i := range m.Events {
		if e := &m.Events[i]; e.Type == signaling.TypeWelcome && e.Inst == inst {
			return e
		}
	}
	return nil
}

func (m *stateMsg) part(id string) *partState {
	for i := range m.Parts {
		if m.Parts[i].ID == id {
			return &m.Parts[i]
		}
	}
	return nil
}

// relayMsg carries a relayed message to the instance holding its addressee.
type relayMsg struct {
	Kind string            `json:"k"`
	Room string            `json:"room"`
	From string            `json:"from"`
	To   string            `json:"to"`
	Msg  signaling.Relayed `json:"m"`
	Hop  int               `json:"hop"`
}

// transferMsg hands a participant's unconfirmed messages (and its name, and its message
// numbering) to the instance it reconnected to.
type transferMsg struct {
	Kind string   `json:"k"`
	Room string   `json:"room"`
	ID   string   `json:"id"`
	Gen  uint64   `json:"g"`
	Seq  uint64   `json:"seq"`
	Name string   `json:"name,omitempty"`
	Out  []outMsg `json:"out"`
}

type outMsg struct {
	Seq  uint64 `json:"s"`
	Data []byte `json:"d"`
}

// outgoing is a message to publish once the lock is released.
type outgoing struct {
	inst string
	data []byte
}

// lroom is this instance's copy of a room it holds participants of.
type lroom struct {
	id       string
	snap     *stateMsg // the latest applied state
	applied  uint64    // its version
	based    bool      // applied is known: versions up to it are not for this instance
	baseSet  bool      // a join proposed a base (the lowest wins while joins are in flight)
	pending  map[uint64]*stateMsg
	stuck    time.Time // when the next version was first missed
	joining  int       // joins in flight: nothing is applied meanwhile
	advanced chan struct{}
	held     []relayMsg        // relayed messages that came before the change they depend on
	names    map[string]string // display names heard in messages
	parts    map[string]*lpart // participants connected here (or reconnecting here)
	stopEnd  func() bool
	until    int64
}

func newLRoom(id string) *lroom {
	return &lroom{id: id, pending: map[uint64]*stateMsg{}, advanced: make(chan struct{}),
		names: map[string]string{}, parts: map[string]*lpart{}}
}

// lpart is a participant connected to this instance.
type lpart struct {
	id, key, role, name string
	nameFromToken       bool
	conn                signaling.Conn // nil while reconnecting
	next                signaling.Conn // a joining connection, until its welcome
	gen                 uint64
	seq                 uint64
	outbox              []outMsg
	outBytes            int
	transfer            bool // waiting for its messages from its previous instance
	queued              []relayMsg
	stopGrace           func() bool
	stopTransfer        func() bool
}

func (lr *lroom) stopTimers() {
	if lr.stopEnd != nil {
		lr.stopEnd()
	}
	for _, lp := range lr.parts {
		lp.stopTimers()
	}
}

func (lp *lpart) stopTimers() {
	for _, stop := range []func() bool{lp.stopGrace, lp.stopTransfer} {
		if stop != nil {
			stop()
		}
	}
	lp.stopGrace, lp.stopTransfer = nil, nil
}

func (lr *lroom) waiting(id string) bool {
	if lr.snap == nil {
		return true
	}
	p := lr.snap.part(id)
	return p == nil || p.Waiting
}

func (lr *lroom) anyLocal() *lpart {
	for _, lp := range lr.parts {
		if lp.conn != nil || lp.stopGrace != nil {
			return lp
		}
	}
	return nil
}

func (lr *lroom) info(id, role string) signaling.PeerInfo {
	return signaling.PeerInfo{ID: id, Role: role, Name: lr.names[id]}
}

// offer queues a room's new state (from this instance's own change, or from Pub/Sub) for
// applying in version order.
func (r *Rooms) offer(m *stateMsg) {
	r.mu.Lock()
	lr := r.rooms[m.Room]
	if lr == nil || m.V <= lr.applied && lr.based {
		r.mu.Unlock()
		return
	}
	lr.pending[m.V] = m
	pub := r.drain(lr)
	r.mu.Unlock()
	r.publish(pub)
}

// drain applies the pending versions that follow the applied one.
func (r *Rooms) drain(lr *lroom) []outgoing {
	var out []outgoing
	if lr.joining > 0 {
		return nil
	}
	if !lr.based {
		if !lr.baseSet {
			return nil
		}
		lr.based = true
	}
	for {
		m := lr.pending[lr.applied+1]
		if m == nil {
			break
		}
		delete(lr.pending, m.V)
		out = append(out, r.apply(lr, m)...)
	}
	for v := range lr.pending {
		if v <= lr.applied {
			delete(lr.pending, v)
		}
	}
	if len(lr.pending) > 0 && lr.stuck.IsZero() {
		lr.stuck = time.Now()
	} else if len(lr.pending) == 0 {
		lr.stuck = time.Time{}
		r.redeliverHeld(lr)
	}
	return out
}

// redeliverHeld delivers the relayed messages held while this instance was behind.
func (r *Rooms) redeliverHeld(lr *lroom) {
	held := lr.held
	lr.held = nil
	for _, m := range held {
		lp := lr.parts[m.To]
		from := lr.snap.part(m.From)
		if lp == nil || from == nil || from.Waiting || r.deliverRelay(lr, lp, m.From, m.Msg) != nil {
			r.msgs.WithLabelValues("lost").Inc()
		}
	}
}

// force applies the pending versions up to v, skipping the ones that never came.
func (r *Rooms) force(lr *lroom, v uint64) []outgoing {
	var out []outgoing
	for lr.applied < v {
		next := uint64(0)
		for pv := range lr.pending {
			if pv > lr.applied && (next == 0 || pv < next) {
				next = pv
			}
		}
		if next == 0 || next > v {
			break
		}
		if next > lr.applied+1 {
			r.msgs.WithLabelValues("gap").Inc()
		}
		lr.applied = next - 1
		out = append(out, r.drain(lr)...)
	}
	return out
}

// unstick applies rooms' versions that waited longer than gapWait for a missing one.
func (r *Rooms) unstick() {
	var pub []outgoing
	r.mu.Lock()
	for _, lr := range r.rooms {
		if !lr.stuck.IsZero() && time.Since(lr.stuck) > gapWait && lr.joining == 0 {
			lr.stuck = time.Time{}
			var top uint64
			for v := range lr.pending {
				top = max(top, v)
			}
			pub = append(pub, r.force(lr, top)...)
		}
	}
	r.mu.Unlock()
	r.publish(pub)
}

// apply puts a room's new state in force here and delivers its events to this instance's
// participants.
func (r *Rooms) apply(lr *lroom, m *stateMsg) []outgoing {
	r.msgs.WithLabelValues("state").Inc()
	lr.applied, lr.snap = m.V, m
	close(lr.advanced)
	lr.advanced = make(chan struct{})
	for id, n := range m.Names {
		if lp := lr.parts[id]; lp == nil || lp.name == "" {
			lr.names[id] = n
		}
	}
	for id, lp := range lr.parts {
		if lp.name != "" {
			lr.names[id] = lp.name
		}
	}
	if m.Until != lr.until {
		lr.until = m.Until
		if lr.stopEnd != nil {
			lr.stopEnd()
		}
		room := lr
		lr.stopEnd = time.AfterFunc(time.Until(time.UnixMilli(m.Until)), func() { r.expire(room) }).Stop
	}
	var out []outgoing
	for i := range m.Events {
		switch e := &m.Events[i]; {
		case e.Inst == r.inst:
			out = append(out, r.handle(lr, m, e)...)
		case e.Type == signaling.TypeWelcome:
			out = append(out, r.namesFor(lr, e)...)
		}
	}
	// Participants no longer here (left, denied, taken over elsewhere, gone with the room).
	for id, lp := range lr.parts {
		if p := m.part(id); (p == nil || p.Inst != r.inst) && lp.next == nil {
			lp.stopTimers()
			delete(lr.parts, id)
		}
	}
	for id := range lr.names {
		if m.part(id) == nil && lr.parts[id] == nil {
			delete(lr.names, id)
		}
	}
	r.forgetIfEmpty(lr)
	return out
}

// forgetIfEmpty drops a room without participants here.
func (r *Rooms) forgetIfEmpty(lr *lroom) {
	if len(lr.parts) == 0 && lr.joining == 0 && r.rooms[lr.id] == lr {
		lr.stopTimers()
		delete(r.rooms, lr.id)
	}
}

// handle delivers one event to a participant here.
func (r *Rooms) handle(lr *lroom, m *stateMsg, e *roomEvent) []outgoing {
	lp := lr.parts[e.To]
	if lp == nil {
		return nil
	}
	switch e.Type {
	case signaling.TypeWelcome:
		r.welcome(lr, lp, e)
	case "replaced":
		return r.replaced(lr, m, lp, e)
	case signaling.TypeAdmitted:
		if lp.conn != nil {
			lp.conn.Deliver(signaling.Event{Type: signaling.TypeAdmitted, Peers: r.peers(lr, lp)})
		}
	case signaling.TypeReturned:
		lp.outbox, lp.outBytes, lp.queued = nil, 0, nil // nothing relayed before reaches a waiting guest
		if lp.conn != nil {
			lp.conn.Deliver(signaling.Event{Type: signaling.TypeReturned})
		}
	case signaling.TypeDenied, signaling.TypeEnded:
		why := signaling.CloseDenied
		if e.Type == signaling.TypeEnded {
			why = signaling.CloseEnded
		}
		if lp.conn != nil {
			lp.conn.Deliver(signaling.Event{Type: e.Type, Close: &why})
		}
		lp.stopTimers()
		delete(lr.parts, lp.id)
	default: // knock, peer-joined, peer-left, peer-reconnected, peer-name
		if lp.conn != nil {
			lp.conn.Deliver(signaling.Event{Type: e.Type, Peer: lr.info(e.Peer, e.PeerRole), Reason: e.Why})
		}
	}
	return nil
}

// welcome puts a joining connection in place and greets it: the welcome, knocks for a host,
// and after a reconnect the messages it has not confirmed.
func (r *Rooms) welcome(lr *lroom, lp *lpart, e *roomEvent) {
	if lp.next == nil {
		return
	}
	if lp.stopGrace != nil {
		lp.stopGrace()
		lp.stopGrace = nil
	}
	lp.conn, lp.next, lp.gen = lp.next, nil, e.Gen
	p := lr.snap.part(lp.id)
	if p == nil {
		return
	}
	j := &signaling.Joined{ID: lp.id, Role: lp.role, Name: lp.name, Waiting: p.Waiting, Reconnected: e.Reconnected,
		ValidUntil: time.UnixMilli(lr.snap.Until), Peers: []signaling.PeerInfo{}}
	if !p.Waiting {
		j.Peers = r.peers(lr, lp)
	}
	lp.conn.Deliver(signaling.Event{Type: signaling.TypeWelcome, Joined: j})
	if lp.role == auth.RoleHost {
		for _, o := range lr.snap.Parts {
			if o.Waiting && o.ID != lp.id {
				lp.conn.Deliver(signaling.Event{Type: signaling.TypeKnock, Peer: lr.info(o.ID, o.Role)})
			}
		}
	}
	switch {
	case lp.transfer:
		room, gen, seq := lr, lp.gen, p.Seq
		lp.stopTransfer = time.AfterFunc(transferWait, func() { r.transferTimeout(room, lp, gen, seq) }).Stop
	case e.Reconnected:
		for _, o := range lp.outbox {
			lp.conn.Deliver(signaling.Event{Type: signaling.EventRelayed, Seq: o.Seq, Data: o.Data})
		}
	}
}

// peers are the admitted participants other than lp, in join order.
func (r *Rooms) peers(lr *lroom, lp *lpart) []signaling.PeerInfo {
	out := []signaling.PeerInfo{}
	parts := slices.Clone(lr.snap.Parts)
	slices.SortFunc(parts, func(a, b partState) int { return a.Order - b.Order })
	for _, o := range parts {
		if o.ID != lp.id && !o.Waiting {
			out = append(out, lr.info(o.ID, o.Role))
		}
	}
	return out
}

// replaced closes a connection taken over by the same link; if the link reconnected to
// another instance, its unconfirmed messages go there.
func (r *Rooms) replaced(lr *lroom, m *stateMsg, lp *lpart, e *roomEvent) []outgoing {
	if lp.gen != e.Gen {
		return nil
	}
	if lp.conn != nil {
		lp.conn.Deliver(signaling.Event{Close: &signaling.CloseReplaced})
		lp.conn = nil
	}
	p := m.part(lp.id)
	if p == nil || p.Inst == r.inst {
		return nil // taken over here: its welcome follows
	}
	lp.stopTimers()
	delete(lr.parts, lp.id)
	data, err := json.Marshal(transferMsg{Kind: "transfer", Room: lr.id, ID: lp.id, Gen: p.Gen, Seq: lp.seq,
		Name: lp.name, Out: lp.outbox})
	if err != nil {
		return nil
	}
	r.msgs.WithLabelValues("transfer").Inc()
	return []outgoing{{inst: p.Inst, data: data}}
}

// transferIn takes over a participant's unconfirmed messages from its previous instance.
func (r *Rooms) transferIn(t *transferMsg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lr := r.rooms[t.Room]
	if lr == nil {
		return
	}
	lp := lr.parts[t.ID]
	if lp == nil || lp.gen != t.Gen || !lp.transfer {
		return
	}
	if lp.name == "" && t.Name != "" {
		lp.name = t.Name
		lr.names[lp.id] = t.Name
	}
	lp.seq = max(lp.seq, t.Seq)
	lp.outbox = t.Out
	lp.outBytes = 0
	for _, o := range t.Out {
		lp.outBytes += len(o.Data)
		if lp.conn != nil {
			lp.conn.Deliver(signaling.Event{Type: signaling.EventRelayed, Seq: o.Seq, Data: o.Data})
		}
	}
	r.endTransfer(lr, lp)
}

// transferTimeout gives up waiting for the previous instance (gone, or Redis lost the
// message): numbering moves past whatever it may have used.
func (r *Rooms) transferTimeout(lr *lroom, lp *lpart, gen, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lr.parts[lp.id] != lp || lp.gen != gen || !lp.transfer {
		return
	}
	lp.seq = max(lp.seq, seq+seqJump)
	r.endTransfer(lr, lp)
}

func (r *Rooms) endTransfer(lr *lroom, lp *lpart) {
	lp.transfer = false
	if lp.stopTransfer != nil {
		lp.stopTransfer()
		lp.stopTransfer = nil
	}
	queued := lp.queued
	lp.queued = nil
	for _, q := range queued {
		_ = r.deliverRelay(lr, lp, q.From, q.Msg)
	}
}

// deliverRelay numbers a relayed message for lp, keeps it until confirmed and delivers it.
func (r *Rooms) deliverRelay(lr *lroom, lp *lpart, from string, msg signaling.Relayed) error {
	if lr.waiting(lp.id) {
		return signaling.ErrNoSuchPeer
	}
	if lp.transfer {
		if len(lp.queued) >= r.lim.OutboxMessages {
			return signaling.ErrUndeliverable
		}
		lp.queued = append(lp.queued, relayMsg{From: from, Msg: msg})
		return nil
	}
	ev, err := signaling.RelayedEvent(from, lp.seq+1, msg)
	if err != nil {
		return err
	}
	if len(lp.outbox) >= r.lim.OutboxMessages || lp.outBytes+len(ev.Data) > r.lim.OutboxBytes {
		return signaling.ErrUndeliverable
	}
	lp.seq++
	lp.outbox = append(lp.outbox, outMsg{Seq: lp.seq, Data: ev.Data})
	lp.outBytes += len(ev.Data)
	if lp.conn != nil {
		lp.conn.Deliver(ev)
	}
	return nil
}

// relayIn delivers a relayed message from another instance; one that arrives after its
// addressee moved on is passed on once.
func (r *Rooms) relayIn(m *relayMsg) {
	r.mu.Lock()
	lr := r.rooms[m.Room]
	var fwd []outgoing
	switch {
	case lr == nil || lr.snap == nil:
		r.msgs.WithLabelValues("lost").Inc()
	case lr.parts[m.To] != nil:
		r.msgs.WithLabelValues("relay_in").Inc()
		if from := lr.snap.part(m.From); from == nil || from.Waiting || lr.waiting(m.To) {
			if len(lr.pending) > 0 && len(lr.held) < r.lim.OutboxMessages {
				lr.held = append(lr.held, *m) // this instance is behind: try again once it caught up
			} else {
				r.msgs.WithLabelValues("lost").Inc()
			}
		} else if r.deliverRelay(lr, lr.parts[m.To], m.From, m.Msg) != nil {
			r.msgs.WithLabelValues("lost").Inc()
		}
	default:
		p := lr.snap.part(m.To)
		if p == nil || p.Inst == r.inst || m.Hop > 0 {
			r.msgs.WithLabelValues("lost").Inc()
			break
		}
		m.Hop++
		if data, err := json.Marshal(m); err == nil {
			fwd = append(fwd, outgoing{inst: p.Inst, data: data})
		}
	}
	r.mu.Unlock()
	r.publish(fwd)
}

// expire ends this instance's part of a room at its end; Redis forgets the room by itself.
func (r *Rooms) expire(lr *lroom) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rooms[lr.id] != lr || time.Now().Before(time.UnixMilli(lr.until)) {
		return
	}
	for id, lp := range lr.parts {
		if lp.conn != nil {
			lp.conn.Deliver(signaling.Event{Type: signaling.TypeEnded, Close: &signaling.CloseEnded})
		}
		lp.stopTimers()
		delete(lr.parts, id)
	}
	r.forgetIfEmpty(lr)
}

// namesMsg tells a joining participant's instance the display names of this instance's
// participants, which Redis does not hold.
type namesMsg struct {
	Kind  string            `json:"k"`
	Room  string            `json:"room"`
	For   string            `json:"for"`
	Gen   uint64            `json:"g"`
	Names map[string]string `json:"names"`
}

// namesFor answers a welcome on another instance with the names of the participants here.
func (r *Rooms) namesFor(lr *lroom, e *roomEvent) []outgoing {
	names := map[string]string{}
	for id, lp := range lr.parts {
		if lp.name != "" {
			names[id] = lp.name
		}
	}
	if len(names) == 0 {
		return nil
	}
	data, err := json.Marshal(namesMsg{Kind: "names", Room: lr.id, For: e.To, Gen: e.Gen, Names: names})
	if err != nil {
		return nil
	}
	return []outgoing{{inst: e.Inst, data: data}}
}

// namesIn learns names from another instance and tells the participant who joined here:
// peer-name for admitted peers, a knock again for waiting guests (to a host).
func (r *Rooms) namesIn(m *namesMsg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lr := r.rooms[m.Room]
	if lr == nil || lr.snap == nil {
		return
	}
	lp := lr.parts[m.For]
	for id, name := range m.Names {
		if lr.parts[id] != nil || lr.names[id] == name {
			continue
		}
		lr.names[id] = name
		p := lr.snap.part(id)
		if lp == nil || lp.conn != nil && lp.gen != m.Gen || lp.conn == nil || p == nil {
			continue
		}
		switch {
		case p.Waiting && lp.role == auth.RoleHost:
			lp.conn.Deliver(signaling.Event{Type: signaling.TypeKnock, Peer: lr.info(id, p.Role)})
		case !p.Waiting && !lr.waiting(lp.id):
			lp.conn.Deliver(signaling.Event{Type: signaling.TypePeerName, Peer: lr.info(id, p.Role)})
		}
	}
}
