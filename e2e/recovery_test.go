package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// killServerSide closes, from Ferry's side, every established TCP connection to its port
// (sock_destroy through `ss -K`, as a restarting server or a middlebox would): the client
// gets a reset. It returns how many connections it closed.
func killServerSide(t *testing.T, port int) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("closing connections from the server's side (ss -K) needs root")
	}
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
	}
	// No reload: the test's observer (gone with a reload) is still there, in the call view.
	for _, tb := range []*tab{host, guest} {
		if got := tb.eval(`Array.isArray(window.__states) && document.body.dataset.view`); got != "call" {
			t.Errorf("%s: view %v after recovery", tb.name, got)
		}
	}
	noErrs(t, host, guest)
}

// restart stops Ferry (SIGTERM, as an operator's restart) and starts it again on the same
// ports with the same data directory.
func (e *pageEnv) restart(t *testing.T) {
	t.Helper()
	old := e.p
	yaml := e.yaml
	for _, r := range []struct {
		key  string
		port int
	}{{"udp_listen", old.udpPort}, {"tcp_listen", old.tcpPort}, {"tls_listen", old.tlsPort}} {
		if r.port != 0 {
			yaml = strings.Replace(yaml, r.key+`: ["127.0.0.1:0"]`, fmt.Sprintf(`%s: ["127.0.0.1:%d"]`, r.key, r.port), 1)
		}
	}
	yaml = strings.Replace(yaml, `listen: "127.0.0.1:0"`, fmt.Sprintf(`listen: "127.0.0.1:%d"`, old.httpPort), 1)
	yaml = strings.Replace(yaml, `listen: "127.0.0.1:0"`, fmt.Sprintf(`listen: "127.0.0.1:%d"`, old.adminPort), 1)
	old.stop(t)
	e.p = startFerryIn(t, filepath.Dir(old.dataDir), yaml)
	if e.p.httpPort != old.httpPort || e.p.udpPort != old.udpPort {
		t.Fatalf("restarted on other ports: %d/%d, was %d/%d", e.p.httpPort, e.p.udpPort, old.httpPort, old.udpPort)
	}
}

// Ferry restarts during a call. Rooms live in memory, so the restarted Ferry knows neither
// room nor admission: both pages show "reconnecting…", come back without a reload, the
// patient waits again and the practitioner sees the knock again (with the name); one
// admit later both decode video again, within 15 s of the restart.
func TestPageFerryRestart(t *testing.T) {
	e := startPageFerry(t, "  page:\n    enabled: true\n")
	hostLink, guestLink := e.room(t)
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{})
	checkRelayOnly(t, host, guest)
	guest.eval(`document.querySelector('[data-testid=name-input]').value = 'Herr Özdemir'`)
	admit(t, host, guest)
	host.waitMedia(15*time.Second, true, true)
	guest.waitMedia(15*time.Second, true, true)
	for _, tb := range []*tab{host, guest} {
		tb.eval(watchStatesJS)
	}
	start := time.Now()
	e.restart(t)
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`window.__states.some((s) => s.startsWith('banner-reconnecting'))`, 5*time.Second, "reconnecting… shown")
	}
	guest.waitJS(`document.body.dataset.view === 'waiting'`, 10*time.Second, "the patient waits again")
	host.waitJS(`[...document.querySelectorAll('[data-testid=knock] .name')].some((e) => e.textContent === 'Herr Özdemir')`, 10*time.Second, "the knock again, with the name")
	host.click("admit")
	for _, tb := range []*tab{host, guest} {
		tb.waitMedia(15*time.Second-time.Since(start), true, true)
	}
	t.Logf("video again %.1fs after the restart (one admit)", time.Since(start).Seconds())
	for _, tb := range []*tab{host, guest} {
		if tb.eval(`Array.isArray(window.__states)`) != true { // a reload would have dropped the observer
			t.Errorf("%s: the page was reloaded", tb.name)
		}
	}
	noErrs(t, host, guest)
}
