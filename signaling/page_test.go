package signaling

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling/web"
)

func withPage(limit int64) func(*envOpts) {
	return func(o *envOpts) {
		p, err := web.New(web.Config{MaxFileBytes: limit})
		if err != nil {
			panic(err)
		}
		o.rooms.Page = p
	}
}

func get(t *testing.T, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp, []byte(b.String())
}

// The page is served at /r/{room} for well-formed room ids only, with the configured file
// limit, and the room id never reaches a metric label or the access record's route.
func TestPageRoutes(t *testing.T) {
	e := newRoomEnv(t, withPage(12345))
	resp, body := get(t, e.srv.URL+"/r/"+e.room)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `data-max-file-bytes="12345"`) {
		t.Fatalf("GET /r/{room}: %s %.200s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	for _, path := range []string{"/r/short", "/r/" + e.room + "x/../..", "/r/" + strings.Repeat("a", 65), "/assets/nope.js", "/assets/../web.go"} {
		if resp, _ := get(t, e.srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
	for _, asset := range []string{"app.js", "page.css", "i18n.js", "peer.js", "icon.svg"} {
		resp, _ := get(t, e.srv.URL+"/assets/"+asset)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET /assets/%s: %s %v", asset, resp.Status, resp.Header)
		}
	}
	if v := e.gauge(t, "ferry_http_requests_total", "route", "/r", "code", "200"); v != 1 {
		t.Errorf("route /r counted %v times", v)
	}
	if v := e.gauge(t, "ferry_http_requests_total", "route", "/assets", "code", "200"); v != 5 {
		t.Errorf("route /assets counted %v times", v)
	}
	var scrape strings.Builder
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		scrape.WriteString(mf.String())
	}
	if strings.Contains(scrape.String(), e.room) {
		t.Error("a metric names the room")
	}
}

// Without a page the link path is not served, but the connection test's ICE servers are.
func TestPageDisabled(t *testing.T) {
	e := newRoomEnv(t)
	if resp, _ := get(t, e.srv.URL+"/r/"+e.room); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /r/{room} without a page: %s", resp.Status)
	}
	if resp, _ := get(t, e.srv.URL+"/v1/rooms/"+e.room+"/ice-servers", "Authorization", "Bearer "+e.token(t, auth.RoleGuest)); resp.StatusCode != 200 {
		t.Fatalf("ice-servers: %s", resp.Status)
	}
}

// GET /v1/rooms/{room}/ice-servers gives a page's connection test short-lived TURN
// credentials for a valid link (also before the room opens), and refuses everything else
// with the right status.
func TestRoomICEServers(t *testing.T) {
	e := newRoomEnv(t, withPage(0))
	u := e.srv.URL + "/v1/rooms/" + e.room + "/ice-servers"
	resp, body := get(t, u, "Authorization", "Bearer "+e.token(t, auth.RoleGuest))
	var out struct {
		Type       string
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"iceServers"`
		ExpireAt time.Time `json:"iceServersExpireAt"`
	}
	mustJSON(t, body, &out)
	if resp.StatusCode != 200 || len(out.ICEServers) != 2 || out.ICEServers[1].Username == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("ice-servers: %s %s", resp.Status, body)
	}
	if ttl := out.ExpireAt.Sub(e.clock.Now()); ttl > CheckCredentialTTL || ttl < CheckCredentialTTL-time.Second {
		t.Errorf("credentials live %s, want %s", ttl, CheckCredentialTTL)
	}
	if id, err := e.auth.Lookup(out.ICEServers[1].Username); err != nil || id.Passwords[0] != out.ICEServers[1].Credential {
		t.Errorf("the credential does not verify: %v", err)
	}
	if !strings.HasPrefix(strings.SplitN(out.ICEServers[1].Username, ":", 2)[1], "check-") {
		t.Errorf("user id %q does not say it is a connection test", out.ICEServers[1].Username)
	}
	later := e.token(t, auth.RoleGuest, func(c *auth.RoomClaims) { c.NotBefore = e.clock.Now().Add(time.Hour) })
	if resp, body := get(t, u, "Authorization", "Bearer "+later); resp.StatusCode != 200 {
		t.Errorf("a link for later: %s %s", resp.Status, body)
	}
	other := auth.NewRoomID()
	cases := []struct {
		name   string
		auth   string
		status int
		code   string
	}{
		{"no token", "", 401, "unauthorized"},
		{"not bearer", "Basic eDp5", 401, "unauthorized"},
		{"garbage", "Bearer x.y.z", 401, "token_invalid"},
		{"expired", "Bearer " + e.token(t, auth.RoleGuest, func(c *auth.RoomClaims) {
			c.Expires, c.NotBefore = e.clock.Now().Add(-time.Minute), e.clock.Now().Add(-time.Hour)
		}), 401, "token_expired"},
		{"other room", "Bearer " + e.token(t, auth.RoleHost, func(c *auth.RoomClaims) { c.Room = other }), 403, "wrong_room"},
	}
	for _, c := range cases {
		resp, body := get(t, u, "Authorization", c.auth)
		var er apiError
		_ = json.Unmarshal(body, &er)
		if resp.StatusCode != c.status || er.Error.Code != c.code {
			t.Errorf("%s: %s %s, want %d %s", c.name, resp.Status, body, c.status, c.code)
		}
	}
	if v := e.gauge(t, "ferry_http_requests_total", "route", "/v1/rooms/ice-servers", "code", "200"); v != 2 {
		t.Errorf("route counted %v times", v)
	}
}

// iceCheck asks the connection test's ICE servers with token and returns the status and
// the error code ("" on success).
func (e *roomEnv) iceCheck(t *testing.T, token string) (int, string) {
	t.Helper()
	resp, body := get(t, e.srv.URL+"/v1/rooms/"+e.room+"/ice-servers", "Authorization", "Bearer "+token)
	var er apiError
	_ = json.Unmarshal(body, &er)
	if resp.StatusCode != http.StatusOK && (er.Error.Code == "" || er.Error.Message == "") {
		t.Fatalf("%s without a JSON error: %s", resp.Status, body)
	}
	return resp.StatusCode, er.Error.Code
}

// The connection test's ICE servers refuse the links the WebSocket refuses for the room's
// state, with the close code's reason: a denied link (403 denied, as close 4406), a used
// one-visit link (403 link_used, 4411), any link of an ended room (410 ended, 4410). A
// one-visit link whose participant is still in the room is its own reconnect: served.
func TestRoomICEServersRefuseWhatTheRoomRefuses(t *testing.T) {
	e := newRoomEnv(t)
	hostTok := e.token(t, auth.RoleHost)
	h, _ := e.join(t, hostTok, StateAdmitted)

	denied := e.token(t, auth.RoleGuest)
	if st, code := e.iceCheck(t, denied); st != http.StatusOK {
		t.Fatalf("a guest before joining: %d %s", st, code)
	}
	g, w := e.join(t, denied, StateWaiting)
	h.expect(t, TypeKnock)
	h.send(t, msg{"type": "deny", "id": w.str("you")})
	g.expect(t, TypeDenied)
	g.expectClose(t, CloseDenied.Code)
	h.expect(t, TypePeerLeft)
	if st, code := e.iceCheck(t, denied); st != http.StatusForbidden || code != CloseDenied.Label {
		t.Errorf("a denied link: %d %s, want 403 denied", st, code)
	}
	e.dial(t, denied).expectClose(t, CloseDenied.Code)
	if st, _ := e.iceCheck(t, e.token(t, auth.RoleGuest)); st != http.StatusOK {
		t.Errorf("another guest's link is refused too: %d", st)
	}

	once := e.token(t, auth.RoleGuest, func(c *auth.RoomClaims) { c.OneVisit = "interpreter-1" })
	i, w := e.join(t, once, StateWaiting)
	h.expect(t, TypeKnock)
	if st, code := e.iceCheck(t, once); st != http.StatusOK {
		t.Errorf("a one-visit link whose participant is in the room: %d %s", st, code)
	}
	h.send(t, msg{"type": "admit", "id": w.str("you")})
	i.expect(t, TypeAdmitted)
	h.expect(t, TypePeerJoined)
	_ = i.ws.Close(1000, "done")
	h.expect(t, TypePeerLeft)
	if st, code := e.iceCheck(t, once); st != http.StatusForbidden || code != CloseLinkUsed.Label {
		t.Errorf("a used one-visit link: %d %s, want 403 link_used", st, code)
	}
	e.dial(t, once).expectClose(t, CloseLinkUsed.Code)

	h.send(t, msg{"type": "end"})
	h.expect(t, TypeEnded)
	h.expectClose(t, CloseEnded.Code)
	for name, tok := range map[string]string{"host": hostTok, "new guest": e.token(t, auth.RoleGuest)} {
		if st, code := e.iceCheck(t, tok); st != http.StatusGone || code != CloseEnded.Label {
			t.Errorf("%s of an ended room: %d %s, want 410 ended", name, st, code)
		}
	}
	e.dial(t, hostTok).expectClose(t, CloseEnded.Code)
}
