package signaling

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// verifyICE checks that the TURN credential of an ICE-servers list is one the relay accepts
// now, and returns its username.
func (e *roomEnv) verifyICE(t *testing.T, m msg) string {
	t.Helper()
	servers, _ := m["iceServers"].([]any)
	for _, s := range servers {
		entry := s.(map[string]any)
		user, _ := entry["username"].(string)
		if user == "" {
			continue
		}
		id, err := e.auth.Lookup(user)
		if err != nil || id.Passwords[0] != entry["credential"] {
			t.Fatalf("ICE credential %q does not verify: %v", user, err)
		}
		return user
	}
	t.Fatalf("no TURN credential in %v", m)
	return ""
}

// join connects with token and checks the welcome.
func (e *roomEnv) join(t *testing.T, token, wantState string) (*client, msg) {
	t.Helper()
	c := e.dial(t, token)
	w := c.expect(t, TypeWelcome)
	if w.str("state") != wantState || w.str("protocol") != Protocol || w.str("you") == "" {
		t.Fatalf("welcome %v, want state %s", w, wantState)
	}
	return c, w
}

// Two and three clients: a host, a guest through the waiting room, addressing with to,
// and every relayed type both ways, with from and seq.
func TestRoomRelayBetweenParticipants(t *testing.T) {
	e := newRoomEnv(t)
	h, hw := e.join(t, e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.MaxGuests = 2; c.Name = "Dr. Weiß" }), StateAdmitted)
	if hw.str("role") != auth.RoleHost || len(hw["peers"].([]any)) != 0 || hw.str("iceServersExpireAt") == "" {
		t.Fatalf("host welcome: %v", hw)
	}
	e.verifyICE(t, hw)
	g1, g1w := e.join(t, e.token(t, auth.RoleGuest, named("Patient A")), StateWaiting)
	if _, has := g1w["iceServers"]; has {
		t.Fatalf("a waiting guest gets no TURN credentials: %v", g1w)
	}
	g1id := g1w.str("you")
	if k := h.expect(t, TypeKnock); k.str("id") != g1id || k.str("name") != "Patient A" {
		t.Fatalf("knock %v", k)
	}
	h.send(t, msg{"type": "admit", "id": g1id})
	adm := g1.expect(t, TypeAdmitted)
	peers := adm["peers"].([]any)
	if len(peers) != 1 || peers[0].(map[string]any)["id"] != hw.str("you") || peers[0].(map[string]any)["role"] != "host" ||
		peers[0].(map[string]any)["name"] != "Dr. Weiß" {
		t.Fatalf("admitted peers: %v", adm)
	}
	e.verifyICE(t, adm)
	if j := h.expect(t, TypePeerJoined); j.str("id") != g1id || j.str("role") != "guest" {
		t.Fatalf("peer-joined %v", j)
	}
	g2, g2w := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
	g2id := g2w.str("you")
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": g2id})
	g2.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)
	g1.expect(t, TypePeerJoined)

	sdp := "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\n"
	cand := map[string]any{"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
	hid := hw.str("you")
	h.send(t, msg{"type": "offer", "to": g1id, "sdp": sdp})
	h.send(t, msg{"type": "candidate", "to": g1id, "candidate": cand})
	h.send(t, msg{"type": "candidate", "to": g1id, "candidate": nil})
	h.send(t, msg{"type": "restart", "to": g1id})
	o := g1.expect(t, TypeOffer)
	if o.str("sdp") != sdp || o.str("from") != hid || o["seq"] != float64(1) {
		t.Fatalf("offer arrived as %v", o)
	}
	c := g1.expect(t, TypeCandidate)
	if c.str("from") != hid || c["seq"] != float64(2) || c["candidate"].(map[string]any)["candidate"] != cand["candidate"] {
		t.Fatalf("candidate arrived as %v", c)
	}
	if c := g1.expect(t, TypeCandidate); c["candidate"] != nil || c["seq"] != float64(3) {
		t.Fatalf("end-of-candidates arrived as %v", c)
	}
	if r := g1.expect(t, TypeRestart); r.str("from") != hid {
		t.Fatalf("restart %v", r)
	}
	g1.send(t, msg{"type": "answer", "to": hid, "sdp": "v=0 answer"})
	g1.send(t, msg{"type": "bye", "to": g2id})
	if a := h.expect(t, TypeAnswer); a.str("sdp") != "v=0 answer" || a.str("from") != g1id || a["seq"] != float64(1) {
		t.Fatalf("answer %v", a)
	}
	if b := g2.expect(t, TypeBye); b.str("from") != g1id {
		t.Fatalf("bye %v", b)
	}
	g2.quiet(t) // g2 saw nothing addressed to g1
	h.send(t, msg{"type": "offer", "to": hid, "sdp": "x"})
	if er := h.expect(t, TypeError); er.str("code") != ErrCodeNoSuchPeer || er.str("ref") != "offer" {
		t.Fatalf("offer to oneself: %v", er)
	}
	h.send(t, msg{"type": "ping"})
	h.expect(t, TypePong)
	g1.send(t, msg{"type": "admit", "id": g2id})
	if er := g1.expect(t, TypeError); er.str("code") != ErrCodeNotAllowed {
		t.Fatalf("a guest admitting: %v", er)
	}
	g1.send(t, msg{"type": "end"})
	if er := g1.expect(t, TypeError); er.str("code") != ErrCodeNotAllowed {
		t.Fatalf("a guest ending: %v", er)
	}
	for _, bad := range []string{`{"type":"offer","to":"x"}`, `{"type":"candidate","to":"x","candidate":"a=b"}`,
		`{"type":"teleport"}`, `[1,2]`, `{"type":"admit"}`, `{"type":"offer","sdp":"x"}`} {
		if err := h.ws.Write(t.Context(), 1, []byte(bad)); err != nil {
			t.Fatal(err)
		}
		if er := h.expect(t, TypeError); er.str("code") != ErrCodeBadMessage || strings.Contains(er.str("message"), bad) {
			t.Fatalf("%s: %v", bad, er)
		}
	}
	// A clean close leaves at once.
	_ = g2.ws.Close(1000, "bye")
	for _, c := range []*client{h, g1} {
		if l := c.expect(t, TypePeerLeft); l.str("id") != g2id || l.str("reason") != LeftClosed {
			t.Fatalf("peer-left %v", l)
		}
	}
}

// B07: a waiting guest learns nothing and sends nothing until admitted; admission is never
// implied by the host's arrival; return and deny end the exchange; the knock name passes as
// literal text.
func TestB07WaitingRoomLeaksBeforeAdmission(t *testing.T) {
	e := newRoomEnv(t)
	evil := `<img src=x onerror="window.__pwned=1">Müller`
	gTok := e.token(t, auth.RoleGuest)
	g, gw := e.join(t, gTok, StateWaiting)
	gid := gw.str("you")
	g.send(t, msg{"type": "name", "name": evil})
	if len(gw["peers"].([]any)) != 0 || gw["iceServers"] != nil {
		t.Fatalf("waiting welcome leaks: %v", gw)
	}
	// Before any host, with guessed ids and without.
	for _, typ := range []string{"offer", "candidate", "restart", "bye"} {
		for _, to := range []string{"AAAAAAAAAAAA", "host", gid} {
			m := msg{"type": typ, "to": to, "sdp": "v=0 secret", "candidate": map[string]any{"candidate": "candidate:9 1 udp 1 198.51.100.9 9 typ host"}}
			g.send(t, m)
			if er := g.expect(t, TypeError); er.str("code") != ErrCodeNotAdmitted || er.str("to") != "" {
				t.Fatalf("%s to %s from a waiting guest: %v", typ, to, er)
			}
		}
		g.send(t, msg{"type": typ, "sdp": "v=0", "candidate": nil})
		if er := g.expect(t, TypeError); er.str("code") != ErrCodeBadMessage {
			t.Fatalf("%s without to: %v", typ, er)
		}
	}
	h, hw := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	hid := hw.str("you")
	if k := h.expect(t, TypeKnock); k.str("id") != gid || k.str("role") != auth.RoleGuest || k.str("name") != evil {
		t.Fatalf("knock delivered on connect: %v (the name must pass as the same literal text)", k)
	}
	g.quiet(t) // still waiting: no peer-joined, no host id
	// The guest's messages with the host's real id still go nowhere.
	g.send(t, msg{"type": "offer", "to": hid, "sdp": "v=0 secret"})
	if er := g.expect(t, TypeError); er.str("code") != ErrCodeNotAdmitted {
		t.Fatalf("offer to the real host id while waiting: %v", er)
	}
	// Nor do the host's to the waiting guest.
	h.send(t, msg{"type": "offer", "to": gid, "sdp": "v=0 host"})
	if er := h.expect(t, TypeError); er.str("code") != ErrCodeNoSuchPeer {
		t.Fatalf("offer to a waiting guest: %v", er)
	}
	h.quiet(t)
	g.quiet(t)

	// admit -> return -> admit -> deny.
	h.send(t, msg{"type": "admit", "id": gid})
	if a := g.expect(t, TypeAdmitted); len(a["peers"].([]any)) != 1 {
		t.Fatalf("admitted %v", a)
	}
	h.expect(t, TypePeerJoined)
	h.send(t, msg{"type": "offer", "to": gid, "sdp": "v=0 admitted"})
	g.expect(t, TypeOffer)
	h.send(t, msg{"type": "return", "id": gid})
	g.expect(t, TypeReturned)
	if l := h.expect(t, TypePeerLeft); l.str("id") != gid || l.str("reason") != LeftReturned {
		t.Fatalf("the host must close its PeerConnection: %v", l)
	}
	if k := h.expect(t, TypeKnock); k.str("id") != gid {
		t.Fatalf("the returned guest waits again: %v", k)
	}
	h.send(t, msg{"type": "candidate", "to": gid, "candidate": nil})
	if er := h.expect(t, TypeError); er.str("code") != ErrCodeNoSuchPeer {
		t.Fatalf("candidate to a returned guest: %v", er)
	}
	g.send(t, msg{"type": "candidate", "to": hid, "candidate": nil})
	if er := g.expect(t, TypeError); er.str("code") != ErrCodeNotAdmitted {
		t.Fatalf("candidate from a returned guest: %v", er)
	}
	// A returned guest that reconnects is still waiting and gets no old SDP.
	g2, g2w := e.join(t, gTok, StateWaiting)
	g.expectClose(t, CloseReplaced.Code)
	if g2w.str("you") != gid || !g2w["reconnected"].(bool) {
		t.Fatalf("reconnect of a waiting guest: %v", g2w)
	}
	g2.quiet(t)
	h.send(t, msg{"type": "admit", "id": gid})
	g2.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)
	h.send(t, msg{"type": "deny", "id": gid})
	g2.expect(t, TypeDenied)
	g2.expectClose(t, CloseDenied.Code)
	if l := h.expect(t, TypePeerLeft); l.str("reason") != LeftDenied {
		t.Fatalf("deny: %v", l)
	}
	// The denied link stays refused in this room.
	g3 := e.dial(t, gTok)
	g3.expectClose(t, CloseDenied.Code)
	h.quiet(t)
	if got := e.gauge(t, "ferry_room_participants", "state", "waiting"); got != 0 {
		t.Fatalf("waiting gauge %v", got)
	}
}

// With the waiting room off, guests are admitted as they join.
func TestRoomWithoutWaitingRoom(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true })
	h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	_, gw := e.join(t, e.token(t, auth.RoleGuest), StateAdmitted)
	e.verifyICE(t, gw)
	if j := h.expect(t, TypePeerJoined); j.str("id") != gw.str("you") {
		t.Fatalf("peer-joined %v", j)
	}
	// A third is refused: the room holds two admitted participants by default.
	e.dial(t, e.token(t, auth.RoleGuest)).expectClose(t, CloseRoomFull.Code)
}

// Every refusal closes with its documented code.
func TestRoomRefusalCloseCodes(t *testing.T) {
	e := newRoomEnv(t)
	now := e.clock.Now()
	other, _ := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: []string{"some-other-clinics-key-0123456789abc"}, Now: e.clock.Now})
	foreign, _ := other.Mint(auth.RoomClaims{Room: e.room, Role: auth.RoleHost, Expires: now.Add(time.Hour)})
	expired := e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.NotBefore = now.Add(-2 * time.Hour); c.Expires = now.Add(-time.Second) })
	early := e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.NotBefore = now.Add(time.Hour) })
	wrong := e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.Room = auth.NewRoomID() })
	for _, tc := range []struct {
		name      string
		protocols []string
		query     string
		code      int
		reason    string
	}{
		{"no token", []string{Protocol}, "", 4400, ""},
		{"no ferry.v1", []string{"token." + e.token(t, auth.RoleHost)}, "", 4400, ""},
		{"garbage token", []string{Protocol, "token.abc.def.ghi"}, "", 4401, ""},
		{"foreign key", []string{Protocol, "token." + foreign}, "", 4401, ""},
		{"expired", []string{Protocol, "token." + expired}, "", 4402, ""},
		{"not yet valid", []string{Protocol, "token." + early}, "", 4404, now.Add(time.Hour).Format(time.RFC3339)},
		{"wrong room", []string{Protocol, "token." + wrong}, "", 4403, ""},
		{"query token, wrong room", []string{Protocol}, "?token=" + wrong, 4403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialURL(t, e.wsURL(e.room)+tc.query, nil, tc.protocols)
			if reason := c.expectClose(t, tc.code); !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q, want it to name %q", reason, tc.reason)
			}
			for _, secret := range []string{"abc.def", foreign, expired} {
				if strings.Contains(e.logs.String(), secret) {
					t.Fatal("a token reached the log")
				}
			}
		})
	}
	// The query parameter works for a valid token too.
	q := dialURL(t, e.wsURL(e.room)+"?token="+e.token(t, auth.RoleHost), nil, []string{Protocol})
	q.expect(t, TypeWelcome)
	if e.closes("token_expired") != 1 || e.closes("wrong_room") != 2 || e.closes("bad_request") != 2 {
		t.Fatalf("refusals not counted: %v %v %v", e.closes("token_expired"), e.closes("wrong_room"), e.closes("bad_request"))
	}
}

// A token valid for longer than the server allows rooms to be (exp more than rooms.max_ttl
// after nbf, or after now once nbf has passed or without one; nbf more than 366 days
// ahead) is a bad token: close 4401 with a reason that says so, and 401 token_invalid from
// the connection test's ICE servers. Before, exp 1e15 joined with validUntil in the year
// 31690708, which is not RFC 3339. What POST /v1/rooms mints, and a token minted with a
// back-dated nbf, still join.
func TestRoomTokenValidityWithinMaxTTL(t *testing.T) {
	e := newRoomEnv(t) // rooms.max_ttl: 24 h
	now := e.clock.Now()
	for name, mutate := range map[string]func(*auth.RoomClaims){
		"exp 1e15":           func(c *auth.RoomClaims) { c.Expires = time.Unix(1e15, 0) },
		"no nbf, 25 h":       func(c *auth.RoomClaims) { c.NotBefore, c.Expires = time.Time{}, now.Add(25*time.Hour) },
		"opens in 1 h, 25 h": func(c *auth.RoomClaims) { c.NotBefore, c.Expires = now.Add(time.Hour), now.Add(26*time.Hour) },
		"opens in 400 days": func(c *auth.RoomClaims) {
			c.NotBefore, c.Expires = now.Add(400*24*time.Hour), now.Add(400*24*time.Hour+time.Hour)
		},
		"nbf 1e15, exp beyond": func(c *auth.RoomClaims) { c.NotBefore, c.Expires = time.Unix(1e15, 0), time.Unix(1e15+3600, 0) },
	} {
		tok := e.token(t, auth.RoleHost, mutate)
		if reason := e.dial(t, tok).expectClose(t, CloseTokenBad.Code); !strings.Contains(reason, "rooms.max_ttl") {
			t.Errorf("%s: close reason %q does not name rooms.max_ttl", name, reason)
		}
		if st, code := e.iceCheck(t, tok); st != http.StatusUnauthorized || code != "token_invalid" {
			t.Errorf("%s: connection test %d %s, want 401 token_invalid", name, st, code)
		}
	}
	for name, mutate := range map[string]func(*auth.RoomClaims){
		"exactly rooms.max_ttl":  func(c *auth.RoomClaims) { c.NotBefore, c.Expires = now, now.Add(24*time.Hour) },
		"back-dated nbf":         func(c *auth.RoomClaims) { c.NotBefore, c.Expires = now.Add(-time.Hour), now.Add(24*time.Hour) },
		"issuer's clock 20 s on": func(c *auth.RoomClaims) { c.NotBefore, c.Expires = time.Time{}, now.Add(24*time.Hour+20*time.Second) },
	} {
		tok := e.token(t, auth.RoleHost, mutate)
		if st, code := e.iceCheck(t, tok); st != http.StatusOK {
			t.Errorf("%s: connection test %d %s", name, st, code)
		}
		c := e.dial(t, tok)
		w := c.expect(t, TypeWelcome)
		if _, err := time.Parse(time.RFC3339, w.str("validUntil")); err != nil {
			t.Errorf("%s: validUntil %q: %v", name, w.str("validUntil"), err)
		}
		_ = c.ws.Close(1000, "")
	}
	later := e.token(t, auth.RoleHost, func(c *auth.RoomClaims) {
		c.NotBefore, c.Expires = now.Add(300*24*time.Hour), now.Add(300*24*time.Hour+24*time.Hour)
	})
	e.dial(t, later).expectClose(t, CloseNotYet.Code)
	if e.closes("token_invalid") != 5 {
		t.Errorf("%v refusals counted as token_invalid, want 5", e.closes("token_invalid"))
	}
}

// A key rotation: links signed with the old key keep working while it is listed second,
// and the new key signs.
func TestRoomKeyRotation(t *testing.T) {
	const newKey = "the-new-room-signing-key-0123456789"
	e := newRoomEnv(t, func(o *envOpts) { o.keys = []string{newKey, roomKey} })
	old, _ := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: []string{roomKey}, Now: e.clock.Now})
	tok, _ := old.Mint(auth.RoomClaims{Room: e.room, Role: auth.RoleHost, Expires: e.clock.Now().Add(time.Hour)})
	e.join(t, tok, StateAdmitted)
	resp, body := e.post(t, `{"ttl": 600}`)
	if resp.StatusCode != 201 {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	host := strings.SplitN(string(body), "#t=", 2)[1]
	host = host[:strings.IndexByte(host, '"')]
	only, _ := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: []string{newKey}, Now: e.clock.Now})
	if _, err := only.Verify(host); err != nil {
		t.Fatalf("the new key must sign: %v", err)
	}
}

// A one-visit link (jti) admits one participant once: its own reconnects take over, a
// second visit after it left is refused.
func TestRoomOneVisitLink(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true })
	h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	once := e.token(t, auth.RoleGuest, func(c *auth.RoomClaims) { c.OneVisit = "interpreter-1" })
	i1, w1 := e.join(t, once, StateAdmitted)
	h.expect(t, TypePeerJoined)
	i2, w2 := e.join(t, once, StateAdmitted) // the same visit, reconnecting
	i1.expectClose(t, CloseReplaced.Code)
	if w2.str("you") != w1.str("you") {
		t.Fatal("a reconnect of a one-visit link is the same participant")
	}
	h.expect(t, TypePeerReconnected)
	_ = i2.ws.Close(1000, "done")
	h.expect(t, TypePeerLeft)
	e.dial(t, once).expectClose(t, CloseLinkUsed.Code)
	// Another token with the same jti is the same link.
	same := e.token(t, auth.RoleGuest, func(c *auth.RoomClaims) { c.OneVisit = "interpreter-1"; c.Name = "x" })
	e.dial(t, same).expectClose(t, CloseLinkUsed.Code)
}

// Each limit, and what happens at it.
func TestRoomLimits(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.memory.Waiting = 2 })
		e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
		e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
		e.dial(t, e.token(t, auth.RoleGuest)).expectClose(t, CloseRoomFull.Code)
	})
	t.Run("admitted", func(t *testing.T) {
		e := newRoomEnv(t)
		h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
		_, g1 := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
		_, g2 := e.join(t, e.token(t, auth.RoleGuest), StateWaiting)
		h.expect(t, TypeKnock)
		h.expect(t, TypeKnock)
		h.send(t, msg{"type": "admit", "id": g1.str("you")})
		h.expect(t, TypePeerJoined)
		h.send(t, msg{"type": "admit", "id": g2.str("you")})
		if er := h.expect(t, TypeError); er.str("code") != ErrCodeRoomFull {
			t.Fatalf("admit beyond the limit: %v", er)
		}
		e.dial(t, e.token(t, auth.RoleHost)).expectClose(t, CloseRoomFull.Code)
	})
	t.Run("maxGuests", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true; o.memory.MaxGuests = 3 })
		big := func(c *auth.RoomClaims) { c.MaxGuests = 9 } // capped at 3
		e.join(t, e.token(t, auth.RoleHost, big), StateAdmitted)
		for range 3 {
			e.join(t, e.token(t, auth.RoleGuest), StateAdmitted)
		}
		e.dial(t, e.token(t, auth.RoleGuest)).expectClose(t, CloseRoomFull.Code)
	})
	t.Run("rooms", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.memory.MaxRooms = 1 })
		e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
		e.room = auth.NewRoomID()
		e.dial(t, e.token(t, auth.RoleHost)).expectClose(t, CloseServerFull.Code)
	})
	t.Run("connections per address", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.rooms.ConnectionsPerIP = 2; o.memory.NoWaitingRoom = true })
		e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
		e.join(t, e.token(t, auth.RoleGuest), StateAdmitted)
		e.dial(t, e.token(t, auth.RoleGuest)).expectClose(t, CloseTooManyConn.Code)
	})
	t.Run("message size", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.rooms.MaxMessageBytes = 1024 })
		h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
		h.send(t, msg{"type": "offer", "to": "x", "sdp": strings.Repeat("a", 900)})
		h.expect(t, TypeError)
		h.send(t, msg{"type": "offer", "to": "x", "sdp": strings.Repeat("a", 1100)})
		h.expectClose(t, 1009)
	})
	t.Run("message rate", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.rooms.MessageRate = 1; o.rooms.MessageBurst = 5 })
		h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
		for range 5 {
			h.send(t, msg{"type": "ping"})
			h.expect(t, TypePong)
		}
		e.clock.Advance(time.Second) // one more token
		h.send(t, msg{"type": "ping"})
		h.expect(t, TypePong)
		h.send(t, msg{"type": "ping"})
		h.expectClose(t, CloseRateLimited.Code)
		eventually(t, "rate_limited counted", func() bool { return e.closes("rate_limited") == 1 })
	})
	t.Run("idle", func(t *testing.T) {
		e := newRoomEnv(t, func(o *envOpts) { o.rooms.IdleTimeout = time.Minute })
		h, _ := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
		e.clock.Advance(40 * time.Second)
		h.send(t, msg{"type": "ping"})
		h.expect(t, TypePong)
		e.clock.Advance(40 * time.Second) // 40 s since the ping: alive
		h.quiet(t)
		e.clock.Advance(20 * time.Second)
		h.expectClose(t, CloseIdle.Code)
	})
}

// A room ends at validUntil: everyone gets ended and the close, and the links are expired.
func TestRoomEndsAtValidUntil(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true })
	until := func(c *auth.RoomClaims) { c.Expires = e.clock.Now().Add(30 * time.Minute) }
	hTok := e.token(t, auth.RoleHost, until)
	h, hw := e.join(t, hTok, StateAdmitted)
	if hw.str("validUntil") != e.clock.Now().Add(30*time.Minute).Format(time.RFC3339) {
		t.Fatalf("validUntil %v", hw["validUntil"])
	}
	g, _ := e.join(t, e.token(t, auth.RoleGuest, until), StateAdmitted)
	h.expect(t, TypePeerJoined)
	e.clock.Advance(30*time.Minute - time.Second)
	h.quiet(t)
	e.clock.Advance(time.Second)
	for _, c := range []*client{h, g} {
		c.expect(t, TypeEnded)
		c.expectClose(t, CloseEnded.Code)
	}
	e.dial(t, hTok).expectClose(t, CloseTokenExpiry.Code)
	eventually(t, "rooms gauge back to 0", func() bool { return e.gauge(t, "ferry_rooms_active") == 0 })
}

// A host ends the room; it stays ended for its links until validUntil.
func TestRoomEndedByHost(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true })
	hTok, gTok := e.token(t, auth.RoleHost), e.token(t, auth.RoleGuest)
	h, _ := e.join(t, hTok, StateAdmitted)
	g, _ := e.join(t, gTok, StateAdmitted)
	h.expect(t, TypePeerJoined)
	h.send(t, msg{"type": "end"})
	for _, c := range []*client{h, g} {
		c.expect(t, TypeEnded)
		c.expectClose(t, CloseEnded.Code)
	}
	e.dial(t, gTok).expectClose(t, CloseEnded.Code)
	e.dial(t, hTok).expectClose(t, CloseEnded.Code)
	e.clock.Advance(2 * time.Hour)
	eventually(t, "the ended room is forgotten at validUntil", func() bool { return e.gauge(t, "ferry_rooms_active") == 0 })
}

// POST /v1/rooms: the links, their tokens, and every refusal.
func TestCreateRoomAPI(t *testing.T) {
	e := newRoomEnv(t)
	from := e.clock.Now().Add(time.Hour)
	resp, body := e.post(t, fmt.Sprintf(`{"validFrom":%q,"ttl":1800,"hostName":"Dr. Weiß","maxGuests":2}`, from.Format(time.RFC3339)))
	if resp.StatusCode != 201 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	var out RoomLinks
	mustJSON(t, body, &out)
	if !auth.ValidRoomID(out.Room) || len(out.Room) != 22 || !out.ValidFrom.Equal(from) || !out.ValidUntil.Equal(from.Add(30*time.Minute)) {
		t.Fatalf("room: %+v", out)
	}
	for role, link := range map[string]string{"host": out.Links.Host, "guest": out.Links.Guest} {
		prefix := "https://consult.clinic.example/r/" + out.Room + "#t="
		if !strings.HasPrefix(link, prefix) {
			t.Fatalf("%s link %q", role, link)
		}
		c, err := e.tokens.Verify(strings.TrimPrefix(link, prefix))
		if err == nil || c.Role != role || c.Room != out.Room || !c.NotBefore.Equal(from) || c.MaxGuests != 2 {
			t.Fatalf("%s token: %+v %v (not yet valid expected)", role, c, err)
		}
		if (role == "host") != (c.Name == "Dr. Weiß") {
			t.Fatalf("%s name %q", role, c.Name)
		}
	}
	for body, want := range map[string]string{
		`{"ttl": 999999}`:         "at most",
		`{"ttl": -5}`:             "ttl",
		`{"ttl": "soon"}`:         "ttl",
		`{"maxGuests": 99}`:       "maxGuests",
		`{"maxGuests": 0}`:        "maxGuests",
		`{"hostName": "a\u0000"}`: "hostName",
		`{"validFrom": "2026-11-29T15:00:00Z", "validUntil": "2026-11-29T14:00:00Z"}`: "validUntil",
		`{"validUntil": "2026-11-29T15:00:00Z", "ttl": 60}`:                           "not both",
		`{"room": "mine"}`:                      "unknown field",
		`{"validFrom": "tomorrow"}`:             "RFC 3339",
		`{"validFrom": "2099-01-01T00:00:00Z"}`: "ahead",
	} {
		resp, data := e.post(t, body)
		if resp.StatusCode != 400 || !strings.Contains(string(data), want) {
			t.Errorf("%s: %s %s, want 400 naming %q", body, resp.Status, data, want)
		}
	}
	req := func(key string) int {
		r, _ := e.post(t, "", "Authorization", key)
		return r.StatusCode
	}
	if got := req("Bearer fk_wrong"); got != 401 {
		t.Fatalf("unknown key: %d", got)
	}
	if got := req("Bearer " + e.apiKey); got != 201 {
		t.Fatalf("empty body: %d", got)
	}
	r, _ := httpGet(t, e.srv.URL+"/v1/rooms")
	if r != 405 {
		t.Fatalf("GET /v1/rooms: %d", r)
	}
}

// POST /v1/rooms reads one JSON object strictly (a number for ttl, nothing after the
// object) and says what is wrong: a ttl beyond any clock is above rooms.max_ttl, not
// "negative" (it overflowed before).
func TestCreateRoomBodyIsStrict(t *testing.T) {
	e := newRoomEnv(t)
	for body, want := range map[string]string{
		`{"ttl":"60"}`:                          "ttl must be a whole number, not a string",
		`{"ttl":60} garbage`:                    "more data after the object",
		`{"ttl":60}{"ttl":70}`:                  "more data after the object",
		`[]`:                                    "not a JSON object",
		`{"maxGuests":1.5}`:                     "maxGuests must be a whole number, not a fraction",
		`{"hostName":["Dr. X"]}`:                "hostName must be a string, not an array",
		`{"ttl":1e18}`:                          "ttl is above rooms.max_ttl",
		`{"ttl":1000000000000000000}`:           "ttl is above rooms.max_ttl",
		`{"ttl":99999999999999999999999999}`:    "ttl is above rooms.max_ttl",
		`{"ttl":86401}`:                         "ttl is above rooms.max_ttl: the room may be open at most 24h0m0s",
		`{"validFrom":"2026-11-29T14:00:00Z"}x`: "more data after the object",
	} {
		resp, data := e.post(t, body)
		var er apiError
		mustJSON(t, data, &er)
		if resp.StatusCode != 400 || !strings.Contains(er.Error.Message, want) {
			t.Errorf("%s: %s %q, want 400 saying %q", body, resp.Status, er.Error.Message, want)
		}
	}
	if resp, data := e.post(t, `{"ttl":86400}`+"\n"); resp.StatusCode != 201 {
		t.Errorf("ttl of rooms.max_ttl, newline after: %s %s", resp.Status, data)
	}
}

// While Ferry drains, rooms it holds go on (a participant joins, messages are relayed, a
// dropped one reconnects), POST /v1/rooms answers 503 and a room it does not hold is refused
// with 1013 (try again later), counted as "draining".
func TestRoomsWhileDraining(t *testing.T) {
	e := newRoomEnv(t, func(o *envOpts) { o.memory.NoWaitingRoom = true })
	h, hw := e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	e.h.SetDraining(true)

	g, _ := e.join(t, e.token(t, auth.RoleGuest), StateAdmitted)
	h.expect(t, TypePeerJoined)
	g.send(t, msg{"type": "offer", "to": hw.str("you"), "sdp": "v=0\r\n"})
	if m := h.expect(t, TypeOffer); m.str("sdp") != "v=0\r\n" {
		t.Fatalf("relayed while draining: %v", m)
	}

	resp, body := e.post(t, `{"ttl": 600}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"draining"`) {
		t.Fatalf("POST /v1/rooms while draining: %s %s", resp.Status, body)
	}
	other := e.room
	e.room = auth.NewRoomID()
	c := e.dial(t, e.token(t, auth.RoleHost))
	if why := c.expectClose(t, 1013); why == "" {
		t.Fatal("no reason for the refusal")
	}
	eventually(t, "the refusal counted as draining", func() bool { return e.closes("draining") == 1 })
	e.room = other

	e.h.SetDraining(false)
	e.room = auth.NewRoomID()
	e.join(t, e.token(t, auth.RoleHost), StateAdmitted)
	if resp, _ := e.post(t, ""); resp.StatusCode != 201 {
		t.Fatalf("POST after the drain was called off: %s", resp.Status)
	}
}
