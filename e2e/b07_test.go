package e2e

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricSum scrapes Ferry's /metrics and sums the samples of name whose labels contain every
// one of the given `key="value"` pairs.
func metricSum(t *testing.T, e *pageEnv, name string, labels ...string) float64 {
	t.Helper()
	body, _ := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", e.p.adminPort))
	sum := 0.0
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// noPeerConnectionJS is true while the page has no PeerConnection toward anyone: only the
// connection test's, closed, which never had a remote description.
const noPeerConnectionJS = `window.__pcs.every((pc) => pc.connectionState === 'closed' && !pc.remoteDescription)`

// B07: the waiting room holds until the practitioner consents. The guest knocks with a
// name that is HTML; while it waits, neither page has a PeerConnection toward the other,
// no SDP, candidate or id crosses, and Ferry relays no byte; admit brings the call up
// within 10 s; return closes both PeerConnections within 2 s and puts the guest back in the
// waiting room with its preview; admit again; deny closes the guest's socket with 4406 and
// stops its camera and microphone; reloaded, the denied link's page ends at once (its
// connection test is refused too). The name shows as text and runs nothing.
func TestB07WaitingRoomInTheBrowser(t *testing.T) {
	e := startPageFerry(t, "  page:\n    enabled: true\n")
	hostLink, guestLink := e.room(t)
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{})
	checkRelayOnly(t, host, guest)
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`document.querySelector('[data-testid=conn-verdict]').dataset.result`, 20*time.Second, "connection test done")
	}
	const name = `<img src=x onerror="window.__pwned=1">Müller`
	guest.eval(fmt.Sprintf(`document.querySelector('[data-testid=name-input]').value = %q`, name))
	guest.click("join") // the guest arrives first
	guest.waitJS(`document.body.dataset.view === 'waiting'`, 10*time.Second, "guest waiting")
	host.click("join")
	host.waitJS(`[...document.querySelectorAll('[data-testid=knock] .name')].some((e) => e.textContent === `+strconv.Quote(name)+`)`, 10*time.Second, "the knock, with the name as text")
	relayedBefore := metricSum(t, e, "ferry_turn_relayed_bytes_total")
	time.Sleep(2 * time.Second) // give a leak time to show
	for _, tb := range []*tab{host, guest} {
		if tb.eval(noPeerConnectionJS) != true {
			t.Fatalf("%s: a PeerConnection exists before admission", tb.name)
		}
	}
	if guest.eval(`document.body.dataset.view === 'waiting' && !!document.getElementById('local-video').srcObject`) != true {
		t.Fatal("the waiting guest has no preview")
	}
	for _, f := range guest.frames(false) {
		switch f["type"] {
		case "offer", "answer", "candidate", "peer-joined", "admitted":
			t.Fatalf("the waiting guest received %v", f)
		case "welcome":
			if peers, _ := f["peers"].([]any); len(peers) != 0 || f["iceServers"] != nil {
				t.Fatalf("the waiting guest's welcome tells of peers or relay credentials: %v", f)
			}
		}
	}
	for _, f := range host.frames(false) {
		if f["type"] == "offer" || f["type"] == "candidate" || f["type"] == "answer" {
			t.Fatalf("the host received %v before admitting", f)
		}
	}
	if after := metricSum(t, e, "ferry_turn_relayed_bytes_total"); after != relayedBefore {
		t.Fatalf("Ferry relayed %v bytes while the guest waited", after-relayedBefore)
	}

	admitAt := time.Now()
	host.click("admit")
	guest.waitMedia(10*time.Second, true, true)
	host.waitMedia(10*time.Second-time.Since(admitAt), true, true)
	t.Logf("call up %.1fs after admit", time.Since(admitAt).Seconds())

	// Return: both PeerConnections closed within 2 s, the guest waits with its preview.
	host.click("return")
	returnAt := time.Now()
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`window.__pcs.every((pc) => pc.connectionState === 'closed')`, 2*time.Second-time.Since(returnAt), "PeerConnections closed after return")
	}
	host.waitJS(`document.querySelectorAll('[data-testid=remote-video]').length === 0 && document.querySelector('[data-testid=knock]')`, 2*time.Second, "host's remote video gone, the guest knocks again")
	guest.waitJS(`document.body.dataset.view === 'waiting' && !!document.getElementById('local-video').srcObject && window.__tracks.every((t) => t.readyState === 'live')`, 2*time.Second, "guest back in the waiting room with its preview")

	host.click("admit")
	guest.waitMedia(10*time.Second, true, true)

	host.click("deny")
	guest.waitJS(`window.__wsCloses.includes(4406)`, 5*time.Second, "the guest's socket closed with 4406")
	guest.waitJS(`window.__tracks.length > 0 && window.__tracks.every((t) => t.readyState === 'ended') && window.__pcs.every((pc) => pc.connectionState === 'closed')`, 2*time.Second, "camera and microphone stopped")
	if got := guest.eval(`document.getElementById('ended-text').dataset.reason`); got != "ended.denied" {
		t.Errorf("guest sees %v", got)
	}
	host.waitJS(`window.__pcs.every((pc) => pc.connectionState === 'closed') && !document.querySelector('[data-testid=knock]')`, 2*time.Second, "the host's side closed")
	// Denied for good: reloaded, the page's connection test is refused (403 denied) and the
	// page says so at once, its camera off, without a WebSocket or a Join button to press.
	guest.eval(`setTimeout(() => location.reload(), 0), true`)
	guest.waitJS(`document.body.dataset.view === 'ended' && document.getElementById('ended-text').dataset.reason === 'ended.denied'`, 15*time.Second, "the reloaded page of a denied link ends at once")
	guest.waitJS(`window.__tracks.every((t) => t.readyState === 'ended')`, 2*time.Second, "camera and microphone stopped after the reload")
	if n := guest.eval(`window.__ws.length`); n != float64(0) {
		t.Errorf("the reloaded page of a denied link opened %v WebSockets", n)
	}
	if got := host.eval(`window.__pwned === undefined`); got != true {
		t.Fatal("the knock name ran script in the host's page")
	}
	noErrs(t, host, guest)
}
