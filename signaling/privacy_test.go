package signaling

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferryrelay/ferry/auth"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// After a whole session (waiting, admit, offer/answer/candidates, refusals, end), neither
// the log (at debug level) nor /metrics holds a room id, a participant id, a display name,
// a token, an SDP fragment or an IP address.
func TestRoomPrivacyLogsAndMetrics(t *testing.T) {
	e := newRoomEnv(t)
	name := "Erika Mustermann"
	hTok := e.token(t, auth.RoleHost, named("Dr. Geheim"))
	h, hw := e.join(t, hTok, StateAdmitted)
	g, gw := e.join(t, e.token(t, auth.RoleGuest, named(name)), StateWaiting)
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "admit", "id": gw.str("you")})
	g.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)
	sdp := "v=0\r\no=- 99 2 IN IP4 203.0.113.77\r\na=ice-ufrag:SeCrEtUfRaG\r\n"
	h.send(t, msg{"type": "offer", "to": gw.str("you"), "sdp": sdp})
	g.expect(t, TypeOffer)
	g.send(t, msg{"type": "candidate", "to": hw.str("you"), "candidate": map[string]any{"candidate": "candidate:1 1 udp 1 198.51.100.23 4444 typ srflx"}})
	h.expect(t, TypeCandidate)
	e.dial(t, e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.Room = auth.NewRoomID() })).expectClose(t, CloseWrongRoom.Code)
	h.send(t, msg{"type": "end"})
	h.expectClose(t, CloseEnded.Code)
	g.expectClose(t, CloseEnded.Code)
	eventually(t, "connections closed", func() bool { return e.gauge(t, "ferry_room_connections_active") == 0 })

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	metrics := rec.Body.String()
	if !strings.Contains(metrics, `ferry_room_messages_relayed_total{type="offer"} 1`) ||
		!strings.Contains(metrics, `ferry_room_connections_closed_total{reason="ended"} 2`) {
		t.Fatalf("the session is not counted:\n%s", metrics)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "reason=ended") {
		t.Fatalf("the log should say why connections closed:\n%s", logs)
	}
	for what, out := range map[string]string{"log": logs, "metrics": metrics} {
		for _, secret := range []string{e.room, hw.str("you"), gw.str("you"), name, "Dr. Geheim", "Erika", hTok[:20],
			"SeCrEtUfRaG", "203.0.113.77", "198.51.100.23", "127.0.0.1", "candidate:"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s contains %q", what, secret)
			}
		}
	}
}
