package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// iceUser is the TURN username of an ICE-servers list in a room message.
func iceUser(m map[string]any) string {
	servers, _ := m["iceServers"].([]any)
	for _, s := range servers {
		if u, _ := s.(map[string]any)["username"].(string); u != "" {
			return u
		}
	}
	return ""
}

// credentialTimeline checks that each tab received fresh credentials before the previous
// ones expired, and returns the newest username.
func credentialTimeline(t *testing.T, tb *tab) string {
	t.Helper()
	msgs, at := tb.received()
	var expires time.Time
	newest, pushes := "", 0
	for i, m := range msgs {
		switch m["type"] {
		case "welcome", "admitted", "ice-servers":
		default:
			continue
		}
		exp, err := time.Parse(time.RFC3339, stringOf(m["iceServersExpireAt"]))
		if err != nil {
			continue // a waiting guest's welcome has none
		}
		if !expires.IsZero() && at[i].After(expires) {
			t.Errorf("%s: %s arrived %s after the previous credentials expired", tb.name, m["type"], at[i].Sub(expires))
		}
		if m["type"] == "ice-servers" {
			pushes++
		}
		expires, newest = exp, iceUser(m)
	}
	if pushes < 2 {
		t.Errorf("%s: %d ice-servers pushes", tb.name, pushes)
	}
	return newest
}

func stringOf(v any) string { s, _ := v.(string); return s }

// appliedUser is the TURN username the page's live PeerConnection uses now.
const appliedUserJS = `(() => { const pc = ` + livePC + `; return pc.getConfiguration().iceServers.map((s) => s.username).filter(Boolean)[0] || ''; })()`

// B03: room credentials live 30 s and are pushed 15 s before they expire. The call keeps
// flowing past the first expiry; each page applies every push with setConfiguration; an
// ICE restart after the expiry allocates with the fresh credentials (no 401 for an expired
// username) and connects within 10 s; a screen share (a new transceiver) arrives; a room
// reconnect brings fresh credentials that are applied.
func TestB03CredentialsExpireDuringTheCall(t *testing.T) {
	e := startPageFerry(t, "  credential_ttl: 30s\n  credential_refresh: 15s\n")
	hostLink, guestLink := e.room(t)
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{})
	checkRelayOnly(t, host, guest)
	admit(t, host, guest)
	start := time.Now()
	host.waitMedia(15*time.Second, true, true)
	guest.waitMedia(15*time.Second, true, true)
	time.Sleep(time.Until(start.Add(40 * time.Second))) // past the first credentials' expiry
	for _, tb := range []*tab{host, guest} {
		tb.waitMedia(5*time.Second, true, true) // still flowing on the first allocations
	}
	for _, tb := range []*tab{host, guest} {
		newest := credentialTimeline(t, tb)
		if got := tb.eval(appliedUserJS); got != newest {
			t.Errorf("%s: PeerConnection uses %v, newest pushed %s", tb.name, got, newest)
		}
		if got := tb.eval(`window.__log.some((e) => e.call === 'setConfiguration' && e.ok && e.arg.includes(` + jsString(newest) + `))`); got != true {
			t.Errorf("%s: no setConfiguration with %s", tb.name, newest)
		}
	}

	allocs := metricSum(t, e, "ferry_turn_allocations_created_total")
	restartAt := time.Now()
	guest.eval(livePC + `.restartIce()`)
	deadline := restartAt.Add(10 * time.Second)
	for {
		if metricSum(t, e, "ferry_turn_allocations_created_total") > allocs {
			if s := guest.stats(); len(s) == 1 && s[0].Conn == "connected" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new allocation and connection within 10 s of the restart: %+v", guest.stats())
		}
		time.Sleep(300 * time.Millisecond)
	}
	settle(t, host, guest, 10*time.Second-time.Since(restartAt), "after the ICE restart")
	if n := metricSum(t, e, "ferry_turn_auth_failures_total", `reason="expired"`); n != 0 {
		t.Fatalf("%v requests with expired credentials", n)
	}
	t.Logf("reconnected %.1fs after the restart with fresh credentials", time.Since(restartAt).Seconds())

	guest.click("share")
	host.waitScreen(1, 10*time.Second)

	// The room connection drops and comes back: its welcome carries fresh credentials,
	// which the page applies.
	guest.eval(`window.__ws.at(-1).close(4000, 'test drop')`)
	guest.waitJS(`window.__ws.length === 2 && window.__ws[1].readyState === 1`, 10*time.Second, "the guest reconnected")
	w := guest.waitReceived(5*time.Second, "welcome after the reconnect", func(m map[string]any) bool {
		return m["type"] == "welcome" && m["reconnected"] == true
	})
	if iceUser(w) == "" {
		t.Fatalf("the reconnect's welcome has no credentials: %v", w)
	}
	guest.waitJS(appliedUserJS+` === `+jsString(iceUser(w)), 5*time.Second, "the reconnect's credentials applied")
	if n := metricSum(t, e, "ferry_turn_auth_failures_total", `reason="expired"`); n != 0 {
		t.Fatalf("%v requests with expired credentials", n)
	}
	noErrs(t, host, guest)
	_ = strings.Contains
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
