package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/internal/redistest"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// conn records what a room delivers to one client.
type conn struct {
	t  *testing.T
	ch chan signaling.Event
}

func newConn(t *testing.T) *conn { return &conn{t: t, ch: make(chan signaling.Event, 1024)} }

func (c *conn) Deliver(ev signaling.Event) {
	select {
	case c.ch <- ev:
	default:
		c.t.Error("conn buffer full")
	}
}

// next returns the next event, failing after 5 s.
func (c *conn) next() signaling.Event {
	c.t.Helper()
	select {
	case ev := <-c.ch:
		return ev
	case <-time.After(5 * time.Second):
		c.t.Fatal("no event within 5s")
	}
	return signaling.Event{}
}

// expect returns the next event, which must be of type typ.
func (c *conn) expect(typ string) signaling.Event {
	c.t.Helper()
	ev := c.next()
	if ev.Type != typ {
		c.t.Fatalf("got event %q (%+v), want %q", ev.Type, ev, typ)
	}
	return ev
}

// TestMain keeps go-redis's own messages (connection refused while a test stops Redis) out
// of the test output.
func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func newClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c, err := NewClient(srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newRooms(t testing.TB, c *redis.Client, node string, lim signaling.MemoryRoomsConfig) *Rooms {
	t.Helper()
	r, err := NewRooms(RoomsConfig{Client: c, Node: node, Limits: lim, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func ticket(room, role, key, name string) signaling.Ticket {
	return signaling.Ticket{Room: room, Role: role, Key: key, Name: name, ValidUntil: time.Now().Add(time.Hour)}
}

func join(t *testing.T, r *Rooms, tk signaling.Ticket) (signaling.Session, *conn) {
	t.Helper()
	c := newConn(t)
	s, err := r.Join(context.Background(), tk, c)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	return s, c
}

// relayed decodes a relayed message's wire form.
func relayed(t *testing.T, ev signaling.Event) map[string]any {
	t.Helper()
	if ev.Type != signaling.EventRelayed {
		t.Fatalf("got %q, want a relayed message", ev.Type)
	}
	var m map[string]any
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A host on one instance and a guest on another meet as on one: knock with the name,
// admit, relayed messages both ways with per-addressee numbering, and nothing of it in Redis.
func TestRoomAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv)
	a := newRooms(t, c, "a", signaling.MemoryRoomsConfig{})
	b := newRooms(t, c, "b", signaling.MemoryRoomsConfig{})

	host, hc := join(t, a, ticket("room1", auth.RoleHost, "k-host", "Dr. Weiß"))
	w := hc.expect(signaling.TypeWelcome).Joined
	if w.Waiting || len(w.Peers) != 0 {
		t.Fatalf("host welcome: %+v", w)
	}
	guest, gc := join(t, b, ticket("room1", auth.RoleGuest, "k-guest", "Patient P"))
	gw := gc.expect(signaling.TypeWelcome).Joined
	if !gw.Waiting {
		t.Fatalf("guest should wait: %+v", gw)
	}
	knock := hc.expect(signaling.TypeKnock)
	if knock.Peer.ID != gw.ID || knock.Peer.Name != "Patient P" || knock.Peer.Role != auth.RoleGuest {
		t.Fatalf("knock: %+v", knock.Peer)
	}
	if err := guest.Relay(context.Background(), w.ID, signaling.Relayed{Type: signaling.TypeOffer, SDP: "v=0"}); !errors.Is(err, signaling.ErrNotAdmitted) {
		t.Fatalf("relay while waiting: %v", err)
	}
	if err := host.Admit(context.Background(), gw.ID); err != nil {
		t.Fatal(err)
	}
	adm := gc.expect(signaling.TypeAdmitted)
	if len(adm.Peers) != 1 || adm.Peers[0].ID != w.ID || adm.Peers[0].Name != "Dr. Weiß" {
		t.Fatalf("admitted peers: %+v", adm.Peers)
	}
	pj := hc.expect(signaling.TypePeerJoined)
	if pj.Peer.ID != gw.ID || pj.Peer.Name != "Patient P" {
		t.Fatalf("peer-joined: %+v", pj.Peer)
	}
	for i := 1; i <= 3; i++ {
		if err := host.Relay(context.Background(), gw.ID, signaling.Relayed{Type: signaling.TypeOffer, SDP: "sdp-secret-offer"}); err != nil {
			t.Fatal(err)
		}
		m := relayed(t, gc.next())
		if m["from"] != w.ID || m["seq"] != float64(i) || m["sdp"] != "sdp-secret-offer" {
			t.Fatalf("relayed to guest: %v", m)
		}
	}
	if err := guest.Relay(context.Background(), w.ID, signaling.Relayed{Type: signaling.TypeAnswer, SDP: "sdp-secret-answer"}); err != nil {
		t.Fatal(err)
	}
	if m := relayed(t, hc.next()); m["from"] != gw.ID || m["seq"] != float64(1) {
		t.Fatalf("relayed to host: %v", m)
	}
	assertRedisHoldsNothingPersonal(t, c, "Dr. Weiß", "Patient P", "sdp-secret")
}

// assertRedisHoldsNothingPersonal reads every key and fails on any of the forbidden texts.
func assertRedisHoldsNothingPersonal(t *testing.T, c *redis.Client, forbidden ...string) {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var val string
		switch typ := c.Type(ctx, k).Val(); typ {
		case "string":
			val = c.Get(ctx, k).Val()
		case "hash":
			b, _ := json.Marshal(c.HGetAll(ctx, k).Val())
			val = string(b)
		case "zset":
			val = strings.Join(c.ZRange(ctx, k, 0, -1).Val(), ",")
		}
		for _, f := range forbidden {
			if strings.Contains(val, f) {
				t.Errorf("Redis key %s holds %q: %s", k, f, val)
			}
		}
	}
}

// A participant whose connection drops and who reconnects to another instance keeps its
// id and state, and gets the messages it had not confirmed, then new ones numbered on.
func TestReconnectToAnotherInstanceKeepsUnconfirmedMessages(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv)
	lim := signaling.MemoryRoomsConfig{NoWaitingRoom: true, ReconnectGrace: 10 * time.Second}
	a := newRooms(t, c, "a", lim)
	b := newRooms(t, c, "b", lim)

	host, hc := join(t, a, ticket("room2", auth.RoleHost, "k-host", "H"))
	hid := hc.expect(signaling.TypeWelcome).Joined.ID
	guest, gc := join(t, a, ticket("room2", auth.RoleGuest, "k-guest", ""))
	gid := gc.expect(signaling.TypeWelcome).Joined.ID
	hc.expect(signaling.TypePeerJoined)
	for i := 0; i < 2; i++ {
		if err := host.Relay(context.Background(), gid, signaling.Relayed{Type: signaling.TypeCandidate, Candidate: json.RawMessage(`{"candidate":"c"}`)}); err != nil {
			t.Fatal(err)
		}
		relayed(t, gc.next())
	}
	guest.Confirm(1) // the client confirmed the first only
	guest.Leave(false)

	// The guest reconnects to b with the same link.
	guest2, gc2 := join(t, b, ticket("room2", auth.RoleGuest, "k-guest", ""))
	w := gc2.expect(signaling.TypeWelcome).Joined
	if w.ID != gid || !w.Reconnected || w.Waiting || len(w.Peers) != 1 || w.Peers[0].ID != hid {
		t.Fatalf("welcome after reconnect: %+v", w)
	}
	// The host's name (which Redis does not hold) comes from a, as does the unconfirmed
	// message: in either order.
	var gotName, gotMsg bool
	for !gotName || !gotMsg {
		ev := gc2.next()
		switch ev.Type {
		case signaling.TypePeerName:
			if ev.Peer.ID != hid || ev.Peer.Name != "H" {
				t.Fatalf("peer-name: %+v", ev.Peer)
			}
			gotName = true
		default:
			if m := relayed(t, ev); m["seq"] != float64(2) {
				t.Fatalf("the unconfirmed message again: %v", m)
			}
			gotMsg = true
		}
	}
	if ev := hc.expect(signaling.TypePeerReconnected); ev.Peer.ID != gid {
		t.Fatalf("peer-reconnected: %+v", ev.Peer)
	}
	if err := host.Relay(context.Background(), gid, signaling.Relayed{Type: signaling.TypeRestart}); err != nil {
		t.Fatal(err)
	}
	if m := relayed(t, gc2.next()); m["seq"] != float64(3) || m["type"] != "restart" {
		t.Fatalf("next message after the takeover: %v", m)
	}
	if err := guest2.Relay(context.Background(), hid, signaling.Relayed{Type: signaling.TypeBye}); err != nil {
		t.Fatal(err)
	}
	if m := relayed(t, hc.next()); m["from"] != gid {
		t.Fatalf("relayed to host: %v", m)
	}
	// The old session is stale.
	if err := guest.Relay(context.Background(), hid, signaling.Relayed{Type: signaling.TypeBye}); !errors.Is(err, signaling.ErrStale) {
		t.Fatalf("old session relay: %v", err)
	}
	guest2.Leave(true)
	if ev := hc.expect(signaling.TypePeerLeft); ev.Peer.ID != gid || ev.Reason != signaling.LeftClosed {
		t.Fatalf("peer-left: %+v", ev)
	}
}

// Redis stops: a room whose participants are on one instance goes on relaying; a change
// that needs Redis is refused (never silently lost). Redis comes back empty: each instance
// puts its participants back, and the room works across instances again.
func TestRoomsSurviveARedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv)
	lim := signaling.MemoryRoomsConfig{Participants: 3}
	a := newRooms(t, c, "a", lim)
	b := newRooms(t, c, "b", lim)
	host, hc := join(t, a, ticket("room3", auth.RoleHost, "k-host", "H"))
	hid := hc.expect(signaling.TypeWelcome).Joined.ID
	guest, gc := join(t, a, ticket("room3", auth.RoleGuest, "k-guest", "G"))
	gid := gc.expect(signaling.TypeWelcome).Joined.ID
	hc.expect(signaling.TypeKnock)
	if err := host.Admit(context.Background(), gid); err != nil {
		t.Fatal(err)
	}
	gc.expect(signaling.TypeAdmitted)
	hc.expect(signaling.TypePeerJoined)
	other, oc := join(t, b, ticket("room3", auth.RoleGuest, "k-other", "O"))
	oid := oc.expect(signaling.TypeWelcome).Joined.ID
	hc.expect(signaling.TypeKnock)

	srv.Stop()
	if err := host.Relay(context.Background(), gid, signaling.Relayed{Type: signaling.TypeOffer, SDP: "v=0"}); err != nil {
		t.Fatalf("relay on one instance without Redis: %v", err)
	}
	relayed(t, gc.next())
	if err := guest.Relay(context.Background(), hid, signaling.Relayed{Type: signaling.TypeAnswer, SDP: "v=0"}); err != nil {
		t.Fatal(err)
	}
	relayed(t, hc.next())
	if err := host.Admit(context.Background(), oid); !errors.Is(err, signaling.ErrUnavailable) {
		t.Fatalf("admit without Redis: %v, want ErrUnavailable", err)
	}

	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := host.Admit(context.Background(), oid)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admit after Redis came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	oc.expect(signaling.TypeAdmitted)
	// a's channel may still be subscribing again: the sender is told (undeliverable).
	for {
		err := other.Relay(context.Background(), hid, signaling.Relayed{Type: signaling.TypeOffer, SDP: "v=0"})
		if err == nil {
			break
		}
		if !errors.Is(err, signaling.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("relay after Redis came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		ev := hc.next()
		if ev.Type == signaling.EventRelayed {
			if m := relayed(t, ev); m["from"] != oid {
				t.Fatalf("relayed: %v", m)
			}
			break
		}
	}
}

// Admissible answers with join's rules from the room's shared state, on any instance and
// without changing it: a denied link, a used one-visit link (once its participant has
// gone) and any link of an ended room are refused with the close code a join gets; a room
// not held and a link whose participant is still in the room are not; Redis down is
// ErrUnavailable, never a silent yes.
func TestAdmissibleAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv)
	a := newRooms(t, c, "a", signaling.MemoryRoomsConfig{})
	b := newRooms(t, c, "b", signaling.MemoryRoomsConfig{})
	ctx := context.Background()
	refusal := func(r *Rooms, tk signaling.Ticket) int {
		t.Helper()
		err := r.Admissible(ctx, tk)
		if err == nil {
			return 0
		}
		var ref *signaling.Refusal
		if !errors.As(err, &ref) {
			t.Fatalf("Admissible: %v", err)
		}
		return ref.Close.Code
	}
	if code := refusal(a, ticket("room2", auth.RoleGuest, "k-x", "")); code != 0 {
		t.Fatalf("a room nobody holds: refused %d", code)
	}
	host, hc := join(t, a, ticket("room2", auth.RoleHost, "k-host", ""))
	hc.expect(signaling.TypeWelcome)

	denied := ticket("room2", auth.RoleGuest, "k-denied", "")
	_, gc := join(t, b, denied)
	gw := gc.expect(signaling.TypeWelcome).Joined
	hc.expect(signaling.TypeKnock)
	if err := host.Deny(ctx, gw.ID); err != nil {
		t.Fatal(err)
	}
	gc.expect(signaling.TypeDenied)
	for name, r := range map[string]*Rooms{"a": a, "b": b} {
		if code := refusal(r, denied); code != signaling.CloseDenied.Code {
			t.Errorf("instance %s: a denied link: %d, want %d", name, code, signaling.CloseDenied.Code)
		}
	}
	if code := refusal(b, ticket("room2", auth.RoleGuest, "k-other", "")); code != 0 {
		t.Errorf("another link refused: %d", code)
	}

	once := ticket("room2", auth.RoleGuest, "k-once", "")
	once.OneVisit = "interpreter-1"
	visit, oc := join(t, b, once)
	oc.expect(signaling.TypeWelcome)
	if code := refusal(a, once); code != 0 {
		t.Errorf("a one-visit link whose participant is in the room: %d", code)
	}
	visit.Leave(true) // written to Redis before it returns
	if code := refusal(a, once); code != signaling.CloseLinkUsed.Code {
		t.Errorf("a used one-visit link: %d, want %d", code, signaling.CloseLinkUsed.Code)
	}
	if _, err := b.Join(ctx, once, newConn(t)); !isRefusal(err, signaling.CloseLinkUsed.Code) {
		t.Errorf("join of the used link: %v", err)
	}

	if err := host.End(ctx); err != nil {
		t.Fatal(err)
	}
	for hc.next().Type != signaling.TypeEnded { // past the knock and peer-left of the others
	}
	for _, tk := range []signaling.Ticket{ticket("room2", auth.RoleHost, "k-host", ""), ticket("room2", auth.RoleGuest, "k-new", "")} {
		if code := refusal(b, tk); code != signaling.CloseEnded.Code {
			t.Errorf("%s of an ended room: %d, want %d", tk.Key, code, signaling.CloseEnded.Code)
		}
	}
	keys, _ := c.Keys(ctx, "ferry:room:*").Result()
	before, _ := c.Get(ctx, keys[0]).Result()
	_ = refusal(a, denied)
	if after, _ := c.Get(ctx, keys[0]).Result(); after != before {
		t.Errorf("Admissible changed the room:\n%s\n%s", before, after)
	}

	srv.Stop()
	if err := a.Admissible(ctx, denied); !errors.Is(err, signaling.ErrUnavailable) {
		t.Errorf("with Redis down: %v, want ErrUnavailable", err)
	}
}

func isRefusal(err error, code int) bool {
	var ref *signaling.Refusal
	return errors.As(err, &ref) && ref.Close.Code == code
}
