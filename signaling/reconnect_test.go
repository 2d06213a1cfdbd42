package signaling

import (
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

func (e *roomEnv) viaProxy(t *testing.T, p *proxy, token string) *client {
	t.Helper()
	u := "ws://" + p.ln.Addr().String() + "/v1/rooms/" + e.room + "/ws"
	return dialURL(t, u, nil, []string{Protocol, "token." + token})
}

func peerIDs(m msg) []string {
	var ids []string
	for _, p := range m["peers"].([]any) {
		ids = append(ids, p.(map[string]any)["id"].(string))
	}
	return ids
}

// B05: a reconnect over a half-open socket keeps the participant's place and id, is not
// refused as "room full", gets the messages sent into the dead socket again in order, and
// a late close of the old socket evicts nobody. Outside the grace, the place is gone.
func TestB05ReconnectOverHalfOpenSocket(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.rooms.PingInterval = 10 * time.Second })
	p := newProxy(t, strings.TrimPrefix(e.srv.URL, "http://"))
	h, hw := e.join(t, e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.MaxGuests = 2 }), StateAdmitted)
	hid := hw.str("you")
	gTok := e.token(t, auth.RoleGuest)
	g := e.viaProxy(t, p, gTok)
	gid := g.expect(t, TypeWelcome).str("you")
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": gid})
	g.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)

	// 1-2: the guest's socket goes half-open; the host's offer and candidates go into it.
	p.blackhole(0)
	h.send(t, msg{"type": "offer", "to": gid, "sdp": "v=0 offer"})
	for i := range 3 {
		h.send(t, msg{"type": "candidate", "to": gid, "candidate": map[string]any{"candidate": "c" + string(rune('0'+i))}})
	}
	// 5: a third guest K joins and leaves while G is gone.
	k, kw := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": kw.str("you")})
	k.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)
	_ = k.ws.Close(1000, "")
	h.expect(t, TypePeerLeft)

	// 3: G2 with G's token takes over: same id, admitted, the current peers, and the
	// messages in order.
	g2 := e.viaProxy(t, p, gTok)
	w := g2.expect(t, TypeWelcome)
	if w.str("you") != gid || w.str("state") != StateAdmitted || w["reconnected"] != true ||
		strings.Join(peerIDs(w), ",") != hid {
		t.Fatalf("welcome after takeover: %v", w)
	}
	e.verifyICE(t, w)
	if o := g2.expect(t, TypeOffer); o.str("sdp") != "v=0 offer" || o["seq"] != float64(1) {
		t.Fatalf("offer after takeover: %v", o)
	}
	for i := range 3 {
		if c := g2.expect(t, TypeCandidate); c["seq"] != float64(2+i) || c["candidate"].(map[string]any)["candidate"] != "c"+string(rune('0'+i)) {
			t.Fatalf("candidate %d after takeover: %v", i, c)
		}
	}
	if r := h.expect(t, TypePeerReconnected); r.str("id") != gid {
		t.Fatalf("peer-reconnected %v", r)
	}
	// 4: RST on the old connection after G2's welcome: no peer-left, G2 stays.
	p.reset(0)
	h.quiet(t)
	h.send(t, msg{"type": "offer", "to": gid, "sdp": "v=0 again"})
	if o := g2.expect(t, TypeOffer); o["seq"] != float64(5) {
		t.Fatalf("G2 is not the registered connection: %v", o)
	}
	// A fresh participant beyond the room's three is still refused.
	k2c, k2 := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
	k3c, k3 := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
	h.expect(t, TypeKnock)
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": k2.str("you")})
	h.expect(t, TypePeerJoined)
	g2.expect(t, TypePeerJoined)
	h.send(t, msg{"type": "admit", "id": k3.str("you")})
	if er := h.expect(t, TypeError); er.str("code") != ErrCodeRoomFull {
		t.Fatalf("a fourth admitted participant: %v", er)
	}
	_ = k2c.ws.Close(1000, "")
	h.expect(t, TypePeerLeft)
	g2.expect(t, TypePeerLeft)
	_ = k3c.ws.Close(1000, "")
	h.expect(t, TypePeerLeft)

	// 6: another blackhole; the unanswered ping marks G2 dead, the grace runs out.
	p.blackhole(1)
	e.step(t, 10*time.Second, 1) // both pinged; only H answers
	e.clock.Advance(10 * time.Second)
	eventually(t, "G2 reconnecting", func() bool {
		return e.gauge(t, "ferry_room_participants", "state", "reconnecting") == 1
	})
	h.quiet(t)
	for range 3 {
		e.step(t, 10*time.Second, 1)
	}
	if l := h.expect(t, TypePeerLeft); l.str("id") != gid || l.str("reason") != LeftTimeout {
		t.Fatalf("outside the grace: %v", l)
	}
	// G's next connection is a new join under the waiting-room rules.
	g3, w3 := e.join(t, gTok, StateWaiting)
	if w3.str("you") == gid || w3["reconnected"] != false {
		t.Fatalf("a join after the grace is new: %v", w3)
	}
	if k := h.expect(t, TypeKnock); k.str("id") != w3.str("you") {
		t.Fatalf("knock %v", k)
	}
	// 7: close everything: the gauges return to zero.
	_ = g3.ws.Close(1000, "")
	_ = h.ws.Close(1000, "")
	eventually(t, "gauges back to baseline", func() bool {
		return e.gauge(t, "ferry_rooms_active") == 0 && e.gauge(t, "ferry_room_connections_active") == 0 &&
			e.gauge(t, "ferry_room_participants", "state", "admitted") == 0 &&
			e.gauge(t, "ferry_room_participants", "state", "waiting") == 0 &&
			e.gauge(t, "ferry_room_participants", "state", "reconnecting") == 0
	})
}

// B05 with the default two places: while G reconnects, its place is held (a third guest
// cannot be admitted), and G's reconnect is not refused as full.
func TestB05ReconnectIsNotRoomFull(t *testing.T) {
	e := newRoomEnv(t)
	h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	gTok := e.token(t, auth.RoleGuest)
	g, gw := e.join(t, gTok, StateWaiting)
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": gw.str("you")})
	g.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)
	_ = g.ws.CloseNow() // dropped, not left
	eventually(t, "G reconnecting", func() bool {
		return e.gauge(t, "ferry_room_participants", "state", "reconnecting") == 1
	})
	_, kw := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": kw.str("you")})
	if er := h.expect(t, TypeError); er.str("code") != ErrCodeRoomFull {
		t.Fatalf("G's place must be held: %v", er)
	}
	e.clock.Advance(DefaultReconnectGrace - time.Second)
	_, w := e.join(t, gTok, StateAdmitted)
	if w.str("you") != gw.str("you") {
		t.Fatal("reconnect inside the grace must keep the id")
	}
	h.expect(t, TypePeerReconnected)
	h.quiet(t)
}

// Delivery confirmation: a pong confirms what was written before its ping, so a takeover
// repeats only the unconfirmed tail; a full buffer is answered, never dropped silently.
func TestRoomRedeliveryAndBuffer(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true; o.memory.OutboxMessages = 64 })
	h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	gTok := e.token(t, auth.RoleGuest)
	g, gw := e.join(t, gTok, StateAdmitted)
	gid := gw.str("you")
	h.expect(t, TypePeerJoined)
	for range 40 {
		h.send(t, msg{"type": "candidate", "to": gid, "candidate": nil})
	}
	for i := range 40 {
		if c := g.expect(t, TypeCandidate); c["seq"] != float64(i+1) {
			t.Fatalf("seq %v, want %d", c["seq"], i+1)
		}
	}
	eventually(t, "an early ping confirmed at least the first 32", func() bool { return e.pongs() >= 1 })
	for range 5 { // unconfirmed: no ping until the next interval
		h.send(t, msg{"type": "candidate", "to": gid, "candidate": nil})
		g.expect(t, TypeCandidate)
	}
	g2, _ := e.join(t, gTok, StateAdmitted)
	first := g2.expect(t, TypeCandidate)["seq"].(float64)
	if first <= 32 || first > 41 {
		t.Fatalf("repeated from seq %v: confirmed messages again, or unconfirmed ones lost", first)
	}
	for s := first + 1; s <= 45; s++ {
		if c := g2.expect(t, TypeCandidate); c["seq"] != s {
			t.Fatalf("repeated out of order: %v", c)
		}
	}
	h.expect(t, TypePeerReconnected)
	// Buffer full while G is away: the sender hears it.
	_ = g.ws.CloseNow()
	_ = g2.ws.CloseNow()
	eventually(t, "G reconnecting", func() bool {
		return e.gauge(t, "ferry_room_participants", "state", "reconnecting") == 1
	})
	sent := 0
	for {
		h.send(t, msg{"type": "candidate", "to": gid, "candidate": nil})
		sent++
		select {
		case m := <-h.msgs:
			if m.str("type") != TypeError || m.str("code") != ErrCodeUndeliverable || m.str("to") != gid {
				t.Fatalf("got %v", m)
			}
			if took := sent - 1; took > 64 || took < 64-5 {
				t.Fatalf("a buffer of 64 (with at most 5 unconfirmed) took %d", took)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if sent > 100 {
			t.Fatal("no undeliverable error")
		}
	}
}

// B03: credentials are refreshed before they expire, on every connection, and a reconnect
// brings fresh ones. Waiting or returned guests get none.
func TestB03CredentialRefresh(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) {
		o.rooms.CredentialTTL, o.rooms.RefreshBefore = 120*time.Second, 30*time.Second
	})
	h, hw := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	first := e.verifyICE(t, hw)
	gTok := e.token(t, auth.RoleGuest)
	g, gw := e.join(t, gTok, StateWaiting)
	h.expect(t, TypeKnock)
	e.clock.Advance(90 * time.Second)
	r := h.expect(t, TypeICEServers)
	expires, _ := time.Parse(time.RFC3339, r.str("iceServersExpireAt"))
	old, _ := time.Parse(time.RFC3339, hw.str("iceServersExpireAt"))
	if !e.clock.Now().Before(old) || !expires.Equal(e.clock.Now().Add(120*time.Second)) {
		t.Fatalf("the push must come before %v, with a new expiry: %v", old, r)
	}
	if u := e.verifyICE(t, r); u == first {
		t.Fatal("the refresh carries the same credential")
	}
	g.quiet(t) // waiting: no credentials
	h.send(t, msg{"type": "admit", "id": gw.str("you")})
	e.verifyICE(t, g.expect(t, TypeAdmitted))
	h.expect(t, TypePeerJoined)
	e.clock.Advance(90 * time.Second)
	e.verifyICE(t, h.expect(t, TypeICEServers))
	e.verifyICE(t, g.expect(t, TypeICEServers))
	// G's socket is down during the next push; its reconnect within the grace brings fresh
	// credentials in the welcome.
	_ = g.ws.CloseNow()
	eventually(t, "G reconnecting", func() bool {
		return e.gauge(t, "ferry_room_participants", "state", "reconnecting") == 1
	})
	e.clock.Advance(25 * time.Second)
	_, w := e.join(t, gTok, StateAdmitted)
	if exp, _ := time.Parse(time.RFC3339, w.str("iceServersExpireAt")); !exp.Equal(e.clock.Now().Add(120 * time.Second)) {
		t.Fatalf("welcome after reconnect: %v", w)
	}
	e.verifyICE(t, w)
	h.expect(t, TypePeerReconnected)
	// A returned guest's refreshes stop.
	g3 := e.dial(t, gTok)
	g3.expect(t, TypeWelcome)
	h.expect(t, TypePeerReconnected)
	h.send(t, msg{"type": "return", "id": gw.str("you")})
	g3.expect(t, TypeReturned)
	e.clock.Advance(120 * time.Second)
	g3.quiet(t)
}

// Large relayed messages (renegotiations with many media sections) are confirmed by bytes,
// not only by count: 40 offers of 60 KB, 2.4 MB in all, reach a connected participant whose
// outbox holds 1 MiB, and the sender never hears "undeliverable".
func TestRoomLargeMessagesConfirmedByBytes(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true })
	h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	g, gw := e.join(t, e.token(t, auth.RoleGuest), StateAdmitted)
	gid := gw.str("you")
	g.ws.SetReadLimit(1 << 20)
	h.expect(t, TypePeerJoined)
	sdp := "v=0\r\n" + strings.Repeat("a=x-padding:0123456789abcdef0123456789abcdef\r\n", 1300) // 60 KB
	for i := range 40 {
		h.send(t, msg{"type": "offer", "to": gid, "sdp": sdp})
		if o := g.expect(t, TypeOffer); o["seq"] != float64(i+1) || len(o.str("sdp")) != len(sdp) {
			t.Fatalf("offer %d: seq %v, %d bytes", i, o["seq"], len(o.str("sdp")))
		}
	}
	h.quiet(t) // no undeliverable error
	if e.pongs() < 8 {
		t.Errorf("%d early pings for 2.4 MB: unconfirmed bytes do not ask for confirmation", e.pongs())
	}
}
