package cluster

import (
	"cmp"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Rooms shared by signaling instances. Each room's state — who is in it with which role,
// waiting or admitted, on which instance, its end, one-visit links used and denied links —
// lives in Redis under ferry:room:<id>, expiring at the room's end; rooms.lua changes it
// atomically and publishes each change, with the events it causes, to the instances that
// hold the room's participants (ferry:instance:<id> channels). Each instance delivers the
// events to its own connections in version order. Relayed messages (SDP, candidates) never
// touch Redis's keys: an instance delivers them to its own participants itself and
// publishes them to the instance holding the addressee, which numbers them (seq) and keeps
// them until its client confirms them. A participant reconnecting to another instance
// takes its place over there; the old instance hands the unconfirmed messages over through
// Pub/Sub. Display names are never stored: they travel inside the published messages.

//go:embed rooms.lua
var roomsLua string

var roomScript = redis.NewScript(roomsLua)

// Keys of the instances' liveness: a sorted set of instance ids scored by their expiry.
const instancesKey = keyPrefix + "instances"

// Timing of the instances.
const (
	// instanceBeat is how often an instance renews its liveness and sweeps its rooms.
	instanceBeat = 2 * time.Second
	// instanceTTL is how long an instance counts as alive after its last beat: its
	// participants' place is kept that long when it dies (their clients reconnect elsewhere).
	instanceTTL = 15 * time.Second
	// transferWait bounds the wait for a participant's unconfirmed messages from the
	// instance it was connected to before.
	transferWait = 2 * time.Second
	// gapWait bounds the wait for a missing version of a room before later ones are applied.
	gapWait = time.Second
	// seqJump moves a participant's relayed-message numbers past any that a lost instance may
	// have used, when its messages could not be handed over.
	seqJump = 1 << 16
)

// RoomsConfig configures Rooms.
type RoomsConfig struct {
	Client *redis.Client
	// Node is the node id; the instance id adds a random suffix, so a restart is a new
	// instance.
	Node string
	// Limits are the rooms' limits, as for signaling.MemoryRooms (its defaults apply);
	// MaxRooms bounds the rooms with participants on this instance. Limits.Registerer, if not
	// nil, gets ferry_rooms_active and ferry_room_participants{state} (this instance's) and
	// ferry_cluster_room_messages_total{kind}.
	Limits signaling.MemoryRoomsConfig
	// Logger gets Redis failures (never ids, names or content); nil: none.
	Logger *slog.Logger
	// Registerer overrides Limits.Registerer when not nil.
	Registerer prometheus.Registerer
}

// Rooms implements signaling.Rooms in Redis, for several signaling instances.
type Rooms struct {
	cfg  RoomsConfig
	lim  signaling.MemoryRoomsConfig
	inst string
	rdb  *redis.Client
	ps   *redis.PubSub
	log  *slog.Logger
	msgs *prometheus.CounterVec

	mu    sync.Mutex
	rooms map[string]*lroom
	retry []roomRequest // changes Redis could not take, tried again each beat
	done  bool

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// NewRooms subscribes to this instance's channel and starts its liveness beat. Redis being
// down is not an error here: joins fail (1001) until it answers.
func NewRooms(cfg RoomsConfig) (*Rooms, error) {
	lim := cfg.Limits
	lim.ReconnectGrace = cmp.Or(lim.ReconnectGrace, signaling.DefaultReconnectGrace)
	lim.Participants = cmp.Or(lim.Participants, signaling.DefaultParticipants)
	lim.Waiting = cmp.Or(lim.Waiting, signaling.DefaultWaiting)
	lim.MaxGuests = cmp.Or(lim.MaxGuests, signaling.DefaultMaxGuests)
	lim.MaxRooms = cmp.Or(lim.MaxRooms, signaling.DefaultMaxRooms)
	lim.OutboxMessages = cmp.Or(lim.OutboxMessages, signaling.DefaultOutboxMessages)
	lim.OutboxBytes = cmp.Or(lim.OutboxBytes, signaling.DefaultOutboxBytes)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Rooms{cfg: cfg, lim: lim, inst: cfg.Node + "-" + randomID(6), rdb: cfg.Client,
		log: log.With("component", "cluster-rooms"), rooms: map[string]*lroom{}, stop: make(chan struct{}),
		msgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_cluster_room_messages_total",
			Help: "Room messages between signaling instances through Redis Pub/Sub, by kind: state (room changes applied), relay_out, relay_in (relayed messages to or from another instance), transfer (unconfirmed messages handed over on a reconnect), lost (a relayed message that could not be published or delivered), gap (a room change that never arrived).",
		}, []string{"kind"})}
	reg := cmp.Or[prometheus.Registerer](cfg.Registerer, lim.Registerer)
	if reg != nil {
		for _, c := range []prometheus.Collector{r.msgs, roomGauges{r}} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("cluster: rooms metrics: %w", err)
			}
		}
	}
	for _, k := range []string{"state", "relay_out", "relay_in", "transfer", "lost", "gap"} {
		r.msgs.WithLabelValues(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	r.ps = r.rdb.Subscribe(ctx, instanceChannel+r.inst)
	r.beat()
	r.wg.Add(2)
	go r.receive()
	go r.maintain()
	return r, nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Instance is this instance's id (node id and a random suffix).
func (r *Rooms) Instance() string { return r.inst }

// receive applies what other instances (and rooms.lua) publish to this instance.
func (r *Rooms) receive() {
	defer r.wg.Done()
	first := true
	for m := range r.ps.ChannelWithSubscriptions(redis.WithChannelSize(4096)) {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && !first {
				r.log.Info("room channel subscribed again after a Redis outage: putting this instance's participants back")
				r.beat()
				r.restore()
			}
			first = false
		case *redis.Message:
			r.dispatch([]byte(m.Payload))
		}
	}
}

// envelope is the kind of a published message.
type envelope struct {
	Kind string `json:"k"`
}

func (r *Rooms) dispatch(data []byte) {
	var env envelope
	if json.Unmarshal(data, &env) != nil {
		return
	}
	switch env.Kind {
	case "state":
		var m stateMsg
		if json.Unmarshal(data, &m) == nil {
			r.offer(&m)
		}
	case "relay":
		var m relayMsg
		if json.Unmarshal(data, &m) == nil {
			r.relayIn(&m)
		}
	case "transfer":
		var m transferMsg
		if json.Unmarshal(data, &m) == nil {
			r.transferIn(&m)
		}
	case "names":
		var m namesMsg
		if json.Unmarshal(data, &m) == nil {
			r.namesIn(&m)
		}
	}
}

// maintain renews the liveness, retries changes Redis could not take, sweeps rooms whose
// remote participants' instances are gone, and applies rooms' versions stuck behind a gap.
func (r *Rooms) maintain() {
	defer r.wg.Done()
	t := time.NewTicker(instanceBeat)
	defer t.Stop()
	gaps := time.NewTicker(gapWait / 2)
	defer gaps.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-gaps.C:
			r.unstick()
		case <-t.C:
			r.beat()
			r.retryChanges()
			r.sweep()
		}
	}
}

// beat renews this instance's liveness and forgets instances long gone.
func (r *Rooms) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	now := time.Now()
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, instancesKey, redis.Z{Score: float64(unixMilli(now.Add(instanceTTL))), Member: r.inst})
		p.ZRemRangeByScore(ctx, instancesKey, "-inf", strconv.FormatInt(unixMilli(now.Add(-time.Hour)), 10))
		return nil
	})
	if err != nil {
		r.log.Debug("room liveness not renewed", "err", err)
	}
}

// sweep asks Redis to remove, from rooms this instance holds, participants whose instance
// is gone, so that the others here hear of it (peer-left) as they would of a local one.
func (r *Rooms) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	now := unixMilli(time.Now())
	alive, err := r.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: instancesKey, ByScore: true, Start: strconv.FormatInt(now, 10), Stop: "+inf"}).Result()
	if err != nil {
		return
	}
	live := map[string]bool{r.inst: true}
	for _, i := range alive {
		live[i] = true
	}
	var reqs []roomRequest
	r.mu.Lock()
	for id, lr := range r.rooms {
		if lr.snap == nil {
			continue
		}
		for _, p := range lr.snap.Parts {
			if !live[p.Inst] {
				if lp := lr.anyLocal(); lp != nil {
					reqs = append(reqs, roomRequest{Op: "sweep", Room: id, PID: lp.id, Gen: lp.gen})
				}
				break
			}
		}
	}
	r.mu.Unlock()
	for _, q := range reqs {
		_, _ = r.change(ctx, q)
	}
}

// restore writes this instance's participants back into their rooms, for rooms Redis lost
// (a restart without persistence); rooms Redis kept are left as they are.
func (r *Rooms) restore() {
	var reqs []roomRequest
	r.mu.Lock()
	for id, lr := range r.rooms {
		if lr.snap == nil {
			continue
		}
		q := roomRequest{Op: "restore", Room: id, V: lr.applied, Until: lr.snap.Until, Participants: lr.snap.Cap}
		for pid, lp := range lr.parts {
			p := lr.snap.part(pid)
			if p == nil || p.Inst != r.inst {
				continue
			}
			q.Parts = append(q.Parts, restorePart{ID: pid, Role: lp.role, Key: lp.key, Waiting: p.Waiting, Order: p.Order,
				Gen: lp.gen, Away: lp.conn == nil, NFT: lp.nameFromToken, Seq: lp.seq})
		}
		if len(q.Parts) > 0 {
			reqs = append(reqs, q)
		}
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*commandTimeout)
	defer cancel()
	for _, q := range reqs {
		if m, err := r.change(ctx, q); err == nil {
			r.offer(m)
		}
	}
}

// Close ends every room on this instance without notifying anyone, stops every timer and
// the subscription. Participants stay in Redis: within the reconnect grace their clients
// take their place over on another instance; after it, the others are told they left.
func (r *Rooms) Close() error {
	var err error
	r.once.Do(func() {
		r.mu.Lock()
		r.done = true
		for id, lr := range r.rooms {
			lr.stopTimers()
			delete(r.rooms, id)
		}
		r.mu.Unlock()
		close(r.stop)
		err = r.ps.Close()
		r.wg.Wait()
	})
	return err
}

// roomRequest is a change asked of rooms.lua.
type roomRequest struct {
	Op     string            `json:"op"`
	Room   string            `json:"room"`
	Inst   string            `json:"inst"`
	Now    int64             `json:"now"`
	PID    string            `json:"pid,omitempty"`
	Gen    uint64            `json:"gen,omitempty"`
	Target string            `json:"target,omitempty"`
	Why    string            `json:"why,omitempty"`
	Seq    uint64            `json:"seq"`
	Names  map[string]string `json:"names"`
	Grace  int64             `json:"grace"` // the reconnect grace, ms
	// Join only.
	Role         string `json:"role,omitempty"`
	Key          string `json:"key,omitempty"`
	JTI          string `json:"jti"`
	Until        int64  `json:"till,omitempty"`
	MaxG         int    `json:"maxg"`
	MaxGuests    int    `json:"maxguests"`
	Participants int    `json:"participants"`
	Waiting      int    `json:"waiting"`
	NoWait       bool   `json:"nowait"`
	NFT          bool   `json:"nft"`
	Existing     bool   `json:"existing"`
	// Restore only.
	V     uint64        `json:"v"`
	Parts []restorePart `json:"parts,omitempty"`
}

// restorePart is a participant of this instance put back into a room Redis lost.
type restorePart struct {
	ID      string `json:"id"`
	Role    string `json:"r"`
	Key     string `json:"k"`
	Waiting bool   `json:"w"`
	Order   int    `json:"o"`
	Gen     uint64 `json:"g"`
	Away    bool   `json:"a"`
	NFT     bool   `json:"n"`
	Seq     uint64 `json:"s"`
}

// errRedis wraps a failure to reach Redis.
var errRedis = errors.New("cluster: rooms: Redis")

// change runs rooms.lua for q and applies the room's new state here; its error is a code of
// rooms.lua (as a refusal error) or errRedis.
func (r *Rooms) change(ctx context.Context, q roomRequest) (*stateMsg, error) {
	if q.Names == nil {
		q.Names = r.names(q.Room)
	}
	out, err := r.script(ctx, q)
	if err != nil {
		return nil, err
	}
	var fail struct {
		Err string `json:"err"`
	}
	if json.Unmarshal(out, &fail) == nil && fail.Err != "" {
		return nil, codeError(fail.Err)
	}
	var m stateMsg
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("cluster: rooms: %w", err)
	}
	return &m, nil
}

// script runs rooms.lua for q, from this instance now; errors are errRedis.
func (r *Rooms) script(ctx context.Context, q roomRequest) ([]byte, error) {
	q.Inst, q.Now = r.inst, unixMilli(time.Now())
	q.Grace = r.lim.ReconnectGrace.Milliseconds()
	body, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*commandTimeout)
	defer cancel()
	out, err := roomScript.Run(ctx, r.rdb, []string{roomKey + q.Room}, body, instancesKey, instanceChannel).Text()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errRedis, err)
	}
	return []byte(out), nil
}

// Admissible implements signaling.Rooms with join's rules in rooms.lua (op check), which
// reads the room and changes nothing.
func (r *Rooms) Admissible(ctx context.Context, t signaling.Ticket) error {
	out, err := r.script(ctx, roomRequest{Op: "check", Room: t.Room, Key: t.Key, JTI: t.OneVisit, Names: map[string]string{}})
	if err != nil {
		r.log.Warn("room check failed: Redis cannot be reached", "err", err)
		return signaling.ErrUnavailable
	}
	var res struct {
		OK string `json:"ok"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.OK == "" {
		return fmt.Errorf("cluster: rooms: check: unexpected answer")
	}
	if res.OK == "ok" {
		return nil
	}
	return joinRefusal(codeError(res.OK))
}

// codeError is a refusal by rooms.lua.
type codeError string

func (e codeError) Error() string { return "cluster: rooms: " + string(e) }

// sessionError maps a refusal of a Session call onto signaling's errors.
func sessionError(err error) error {
	var c codeError
	if !errors.As(err, &c) {
		return signaling.ErrUnavailable // Redis is unreachable: the change did not happen
	}
	switch c {
	case "stale":
		return signaling.ErrStale
	case "not_allowed":
		return signaling.ErrNotAllowed
	case "no_such_peer":
		return signaling.ErrNoSuchPeer
	case "room_full":
		return signaling.ErrRoomFull
	}
	return err
}

// joinRefusal maps a refusal of a join onto its close code.
func joinRefusal(err error) error {
	var c codeError
	why := signaling.CloseGoingAway
	if errors.As(err, &c) {
		switch c {
		case "ended":
			why = signaling.CloseEnded
		case "denied":
			why = signaling.CloseDenied
		case "link_used":
			why = signaling.CloseLinkUsed
		case "room_full":
			why = signaling.CloseRoomFull
		case "draining":
			why = signaling.CloseDraining
		}
	}
	return &signaling.Refusal{Close: why}
}

// names are the display names this instance knows in room: they travel with every change.
func (r *Rooms) names(room string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	if lr := r.rooms[room]; lr != nil {
		for id, n := range lr.names {
			out[id] = n
		}
		for id, lp := range lr.parts {
			if lp.name != "" {
				out[id] = lp.name
			}
		}
	}
	return out
}

// Join implements signaling.Rooms.
func (r *Rooms) Join(ctx context.Context, t signaling.Ticket, c signaling.Conn) (signaling.Session, error) {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return nil, &signaling.Refusal{Close: signaling.CloseGoingAway}
	}
	lr := r.rooms[t.Room]
	if lr == nil {
		if len(r.rooms) >= r.lim.MaxRooms {
			r.mu.Unlock()
			return nil, &signaling.Refusal{Close: signaling.CloseServerFull}
		}
		lr = newLRoom(t.Room)
		r.rooms[t.Room] = lr
	}
	lr.joining++
	r.mu.Unlock()

	pid := randomID(9)
	names := r.names(t.Room)
	if t.Name != "" {
		names[pid] = t.Name
	}
	m, err := r.change(ctx, roomRequest{Op: "join", Room: t.Room, PID: pid, Names: names, Role: t.Role, Key: t.Key,
		JTI: t.OneVisit, Until: unixMilli(t.ValidUntil), MaxG: t.MaxGuests, MaxGuests: r.lim.MaxGuests,
		Participants: r.lim.Participants, Waiting: r.lim.Waiting, NoWait: r.lim.NoWaitingRoom, NFT: t.Name != "",
		Existing: t.ExistingOnly})

	r.mu.Lock()
	lr.joining--
	if err != nil {
		pub := r.drain(lr) // what came meanwhile
		r.forgetIfEmpty(lr)
		r.mu.Unlock()
		r.publish(pub)
		if errors.Is(err, errRedis) {
			r.log.Warn("room join failed: Redis cannot be reached", "err", err)
		}
		return nil, joinRefusal(err)
	}
	w := m.welcomeFor(r.inst)
	if w == nil {
		r.mu.Unlock()
		return nil, &signaling.Refusal{Close: signaling.CloseGoingAway}
	}
	lp := lr.parts[w.To]
	if lp == nil {
		lp = &lpart{id: w.To, key: t.Key, role: t.Role, name: t.Name, nameFromToken: t.Name != ""}
		lp.transfer = w.Reconnected // its messages are on the instance it was on
		lr.parts[w.To] = lp
	}
	if t.Name != "" {
		lp.name = t.Name
	}
	lp.next = c
	if !lr.based && (!lr.baseSet || m.V-1 < lr.applied) {
		lr.applied, lr.baseSet = m.V-1, true // this instance holds the room from this change on
	}
	lr.pending[m.V] = m
	pub := r.drain(lr)
	r.mu.Unlock()
	r.publish(pub)

	if !r.await(lr, m.V) {
		r.mu.Lock()
		pub = r.force(lr, m.V)
		r.mu.Unlock()
		r.publish(pub)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if lr.parts[lp.id] != lp || lp.gen != w.Gen || lp.conn != c {
		return nil, &signaling.Refusal{Close: signaling.CloseGoingAway} // replaced meanwhile
	}
	return &session{r: r, lr: lr, lp: lp, gen: w.Gen}, nil
}

// await waits (at most gapWait) until room lr has applied version v.
func (r *Rooms) await(lr *lroom, v uint64) bool {
	deadline := time.Now().Add(gapWait)
	for {
		r.mu.Lock()
		done, ch := lr.applied >= v, lr.advanced
		r.mu.Unlock()
		if done {
			return true
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return false
		}
		select {
		case <-ch:
		case <-time.After(wait):
		}
	}
}

// publish sends what applying changes produced (handed-over messages) to other instances.
func (r *Rooms) publish(out []outgoing) {
	if len(out) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	for _, o := range out {
		if err := r.rdb.Publish(ctx, instanceChannel+o.inst, o.data).Err(); err != nil {
			r.msgs.WithLabelValues("lost").Inc()
		}
	}
}

// retryChanges tries again the changes Redis could not take (a participant's leaving).
func (r *Rooms) retryChanges() {
	r.mu.Lock()
	todo := r.retry
	r.retry = nil
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*commandTimeout)
	defer cancel()
	for i, q := range todo {
		m, err := r.change(ctx, q)
		if errors.Is(err, errRedis) {
			r.mu.Lock()
			r.retry = append(r.retry, todo[i:]...)
			r.mu.Unlock()
			return
		}
		if m != nil {
			r.offer(m)
		}
	}
}

// later keeps a change to try again when Redis answers.
func (r *Rooms) later(q roomRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done && len(r.retry) < 100000 {
		r.retry = append(r.retry, q)
	}
}

// roomGauges reports this instance's rooms and participants at scrape time.
type roomGauges struct{ r *Rooms }

var (
	roomsDesc = prometheus.NewDesc("ferry_rooms_active",
		"Rooms with participants connected to (or reconnecting to) this signaling instance.", nil, nil)
	participantsDesc = prometheus.NewDesc("ferry_room_participants",
		"This instance's room participants by state: admitted, waiting, reconnecting (within the grace).", []string{"state"}, nil)
)

func (g roomGauges) Describe(ch chan<- *prometheus.Desc) { ch <- roomsDesc; ch <- participantsDesc }

func (g roomGauges) Collect(ch chan<- prometheus.Metric) {
	g.r.mu.Lock()
	rooms := len(g.r.rooms)
	var admitted, waiting, reconnecting int
	for _, lr := range g.r.rooms {
		for _, lp := range lr.parts {
			switch {
			case lp.conn == nil:
				reconnecting++
			case lr.waiting(lp.id):
				waiting++
			default:
				admitted++
			}
		}
	}
	g.r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(roomsDesc, prometheus.GaugeValue, float64(rooms))
	for state, n := range map[string]int{"admitted": admitted, "waiting": waiting, "reconnecting": reconnecting} {
		ch <- prometheus.MustNewConstMetric(participantsDesc, prometheus.GaugeValue, float64(n), state)
	}
}
