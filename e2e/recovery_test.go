package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// killServerSide closes, from Ferry's side, every established TCP connection to its port
// (sock_destroy through `ss -K`, as a restarting server or a middlebox would): the client
// gets a reset. It returns how many connections it closed.
func killServerSide(t *testing.T, port int) int {
	t.Helper()
	out, err := exec.Command("ss", "-K", "-t", "-n", "state", "established", fmt.Sprintf("( sport = :%d )", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("ss -K (needs root and CONFIG_INET_DIAG_DESTROY): %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	return n
}

// watchStates records, in the page, every state the reconnect banner and the call status
// take (a test-side observer; the page does not know of it).
const watchStatesJS = `(() => {
  window.__states = [];
  const rec = () => window.__states.push((document.getElementById('banner').hidden ? 'banner-hidden' : 'banner-' + document.getElementById('banner').dataset.state) + ' ' + document.querySelector('[data-testid=conn-state]').dataset.state);
  const o = new MutationObserver(rec);
  for (const id of ['banner', 'conn-state']) o.observe(document.getElementById(id), { attributes: true, childList: true, characterData: true, subtree: true });
  return true;
})()`

// Over TCP and TLS only (no UDP listener, so the ICE servers carry no UDP URL) the call
// connects through Ferry; the connection test says so. Then Ferry closes every TURN and
// signaling connection from its side during the call: both pages show "reconnecting…",
// reconnect the room within the grace, restart ICE with fresh credentials, and decode
// frames again within 15 s, without a reload.
func TestPageTCPTLSOnlyAndRecovery(t *testing.T) {
	// The firewall that lets only TLS out: the call connects over turns: alone.
	t.Run("tls", func(t *testing.T) {
		streamCall(t, map[string]string{"udp": "absent", "tcp": "absent", "tls": "true"}, "tls")
	})
	t.Run("tcp+tls", func(t *testing.T) {
		e, host, guest := streamCall(t, map[string]string{"udp": "absent", "tcp": "true", "tls": "true"}, "tcp", "tls")
		recoverFromDrop(t, e, host, guest)
	})
}

// streamCall runs a relay-only call with Ferry listening on the given stream transports only.
func streamCall(t *testing.T, want map[string]string, transports ...string) (*pageEnv, *tab, *tab) {
	e := startPageFerry(t, "  page:\n    enabled: true\n", transports...)
	hostLink, guestLink := e.room(t)
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{lang: "de-DE"})
	checkRelayOnly(t, host, guest)
	verdict := "test.good"
	if want["tcp"] != "true" {
		verdict = "test.tlsonly"
	}
	guest.waitJS(`document.querySelector('[data-testid=conn-verdict]').dataset.result === '`+verdict+`'`, 20*time.Second, "connection test")
	for tr, w := range want {
		if got := guest.eval(`document.querySelector('[data-testid=test-` + tr + `]').dataset.ok`); got != w {
			t.Errorf("connection test %s: %v, want %s", tr, got, w)
		}
	}
	admit(t, host, guest)
	for _, tb := range []*tab{host, guest} {
		s := tb.waitMedia(20*time.Second, true, true)
		if (s.RelayProtocol != "tcp" || want["tcp"] != "true") && s.RelayProtocol != "tls" {
			t.Fatalf("%s: relayed over %q", tb.name, s.RelayProtocol)
		}
		t.Logf("%s: connected relay/relay over %s", tb.name, s.RelayProtocol)
	}
	return e, host, guest
}

// recoverFromDrop closes Ferry's TURN and room connections from its side mid-call and
// waits for both pages to come back.
func recoverFromDrop(t *testing.T, e *pageEnv, host, guest *tab) {
	before := map[*tab]float64{}
	for _, tb := range []*tab{host, guest} {
		tb.eval(watchStatesJS)
		before[tb] = tb.stats()[0].Frames
	}

	start := time.Now()
	killed := killServerSide(t, e.p.tcpPort) + killServerSide(t, e.p.tlsPort) + killServerSide(t, e.p.httpPort)
	if killed < 4 {
		t.Fatalf("closed only %d connections (want each page's TURN and room connections)", killed)
	}
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`window.__states.some((s) => s.startsWith('banner-reconnecting'))`, 5*time.Second, "reconnecting… shown")
	}
	for _, tb := range []*tab{host, guest} {
		deadline := start.Add(15 * time.Second)
		for {
			s := tb.stats()
			if len(s) == 1 && s[0].Conn == "connected" && s[0].Local == "relay" && s[0].Frames > before[tb]+10 {
				t.Logf("%s: frames again %.1fs after the connections were closed (%s)", tb.name, time.Since(start).Seconds(), s[0].RelayProtocol)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no frames within 15 s of the drop: %+v (states %v)", tb.name, s, tb.eval(`window.__states`))
			}
			time.Sleep(300 * time.Millisecond)
		}
		tb.waitJS(`document.getElementById('banner').hidden && document.querySelector('[data-testid=conn-state]').dataset.state === 'state.connected'`, 5*time.Second, "the call shows connected again")
		if n := tb.eval(`performance.getEntriesByType('navigation').length + ':' + window.__pcs.length`); n == nil {
			t.Fatal("no page")
		}
	}
	// No reload: the page's first navigation is still the only one, and the recorder kept
	// its state.
	for _, tb := range []*tab{host, guest} {
		if got := tb.eval(`window.__states.length > 0 && document.body.dataset.view`); got != "call" {
			t.Errorf("%s: view %v after recovery", tb.name, got)
		}
	}
	noErrs(t, host, guest)
}
