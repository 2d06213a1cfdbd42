package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// livePC is the page's PeerConnection with the other participant.
const livePC = `window.__pcs.find((pc) => pc.signalingState !== 'closed' && pc.remoteDescription)`

// settledJS is true when the call has settled after a negotiation: stable, connected, and
// (checked by the caller) the same mids on both sides.
const settledJS = `(() => { const pc = ` + livePC + `; return !!pc && pc.signalingState === 'stable' && pc.connectionState === 'connected' ? pc.getTransceivers().map((t) => t.mid).sort().join(',') : ''; })()`

// roundLog is what one side did during a round, from the recorder's log and the WS spy.
type roundLog struct {
	rollbacks, offersApplied, answersSent, failures int
}

func sinceRound(tb *tab, logFrom, sentFrom int) roundLog {
	var r roundLog
	entries, _ := tb.eval(fmt.Sprintf(`window.__log.slice(%d).filter((e) => e.call)`, logFrom)).([]any)
	for _, x := range entries {
		e := x.(map[string]any)
		if e["error"] != nil && e["call"] != "setConfiguration" {
			r.failures++
		}
		if e["call"] == "setRemoteDescription" && e["arg"] == "offer" {
			if e["before"] == "have-local-offer" {
				r.rollbacks++ // implicit rollback of our own offer
			}
			if e["ok"] == true {
				r.offersApplied++
			}
		}
	}
	for _, f := range tb.frames(true)[sentFrom:] {
		if f["type"] == "answer" {
			r.answersSent++
		}
	}
	return r
}

func marks(tb *tab) (int, int) {
	n, _ := tb.eval(`window.__log.length`).(float64)
	return int(n), len(tb.frames(true))
}

// settle waits until both pages are stable, connected and agree on the transceivers' mids,
// twice in a row.
func settle(t *testing.T, host, guest *tab, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	agreed := 0
	var h, g any
	for agreed < 2 {
		h, g = host.eval(settledJS), guest.eval(settledJS)
		if h != "" && h == g {
			agreed++
		} else {
			agreed = 0
		}
		if time.Now().After(deadline) {
			const state = `(() => { const pc = ` + livePC + `; return pc ? [pc.signalingState, pc.iceConnectionState, pc.connectionState, JSON.stringify(window.__log.slice(-14).map((e) => [e.t % 100000, e.call || e.ev, e.arg, e.before || e.sig, e.after || e.ice, e.error]))] : 'no pc'; })()`
			for _, tb := range []*tab{host, guest} {
				t.Logf("%s: ws closes %v, sockets %v", tb.name, tb.eval(`window.__wsCloses`), tb.eval(`window.__ws.length`))
				sent, recv := tb.frames(true), tb.frames(false)
				t.Logf("%s: last sent %v", tb.name, types(sent[max(0, len(sent)-12):]))
				t.Logf("%s: last received %v", tb.name, types(recv[max(0, len(recv)-12):]))
			}
			t.Fatalf("%s: not settled within %s: host mids %q, guest mids %q\nhost %v\nguest %v", what, within, h, g, host.eval(state), guest.eval(state))
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// together runs js in both pages at the same moment, from two goroutines.
func together(t *testing.T, js string, tabs ...*tab) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(tabs))
	start := make(chan struct{})
	for i, tb := range tabs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = evalJS[any](tb, js)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %s: %v", tabs[i].name, js, err)
		}
	}
}

// glareRounds renegotiates from both sides at once, n times, and checks each round.
func glareRounds(t *testing.T, host, guest *tab, n int, label string) (collisions int) {
	t.Helper()
	for i := range n {
		hl, hs := marks(host)
		gl, gs := marks(guest)
		framesBefore := []float64{host.stats()[0].Frames, guest.stats()[0].Frames}
		action := `restartIce()`
		if i%2 == 0 {
			action = `addTransceiver('video')`
		}
		together(t, `window.__added = `+livePC+`.`+action, host, guest)
		settle(t, host, guest, 5*time.Second, fmt.Sprintf("%s round %d (%s)", label, i, action))
		h, g := sinceRound(host, hl, hs), sinceRound(guest, gl, gs)
		if h.rollbacks > 0 {
			t.Fatalf("%s round %d: the impolite host rolled back", label, i)
		}
		if h.failures+g.failures > 0 {
			t.Fatalf("%s round %d: negotiation calls failed (host %d, guest %d)", label, i, h.failures, g.failures)
		}
		if h.answersSent != h.offersApplied || g.answersSent != g.offersApplied {
			t.Fatalf("%s round %d: answers %d/%d for offers applied %d/%d", label, i, h.answersSent, g.answersSent, h.offersApplied, g.offersApplied)
		}
		collisions += min(g.rollbacks, 1)
		if i%2 == 0 {
			// Stop the added transceivers again (both at once: glare as well), so that their
			// m-lines are recycled and the SDP does not grow round after round.
			together(t, `window.__added.stop()`, host, guest)
			settle(t, host, guest, 10*time.Second, fmt.Sprintf("%s round %d, transceivers stopped", label, i))
		}
		for j, tb := range []*tab{host, guest} {
			deadline := time.Now().Add(5 * time.Second)
			for tb.stats()[0].Frames <= framesBefore[j] {
				if time.Now().After(deadline) {
					t.Fatalf("%s round %d: %s decodes no new frames", label, i, tb.name)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	return collisions
}

// B01: both sides renegotiate at the same moment (restartIce, or a new transceiver), 20
// times; again after the guest's WebSocket reconnected; and with a screen share started
// within 100 ms of admission. Every time both sides settle in stable within 5 s with the
// same mids, only the polite guest ever rolls back, every applied offer gets exactly one
// answer, nothing fails, and video keeps being decoded; the shared screen arrives.
func TestB01OfferGlare(t *testing.T) {
	e := startPageFerry(t, "  page:\n    enabled: true\n")
	hostLink, guestLink := e.room(t)
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{})
	checkRelayOnly(t, host, guest)
	admit(t, host, guest)
	host.waitMedia(15*time.Second, true, true)
	guest.waitMedia(15*time.Second, true, true)
	settle(t, host, guest, 5*time.Second, "first negotiation")

	c1 := glareRounds(t, host, guest, 20, "simultaneous")

	// The guest's room connection drops and comes back; the roles must stay complementary.
	guest.eval(`window.__ws.at(-1).close(4000, 'test drop')`)
	guest.waitJS(`window.__ws.length === 2 && window.__ws[1].readyState === 1`, 10*time.Second, "the guest reconnected")
	guest.waitReceived(5*time.Second, "welcome after the reconnect", func(m map[string]any) bool {
		return m["type"] == "welcome" && m["reconnected"] == true
	})
	settle(t, host, guest, 10*time.Second, "after the reconnect")
	c2 := glareRounds(t, host, guest, 5, "after reconnect")

	// A screen share within 100 ms of admission, while the first negotiation runs: from the
	// host on even rounds, from the guest on odd ones.
	for i := range 5 {
		host.click("return")
		guest.waitJS(`document.body.dataset.view === 'waiting'`, 5*time.Second, "guest returned")
		host.waitJS(`document.querySelector('[data-testid=knock] [data-testid=admit]')`, 5*time.Second, "knock")
		sharer := host
		if i%2 == 0 {
			host.eval(`document.querySelector('[data-testid=knock] [data-testid=admit]').click(); setTimeout(() => document.querySelector('[data-testid=share]').click(), 50)`)
		} else {
			sharer = guest
			guest.eval(`new MutationObserver((_, o) => { if (document.body.dataset.view === 'call') { o.disconnect(); setTimeout(() => document.querySelector('[data-testid=share]').click(), 20); } }).observe(document.body, { attributes: true })`)
			host.eval(`document.querySelector('[data-testid=knock] [data-testid=admit]').click()`)
		}
		viewer := map[*tab]*tab{host: guest, guest: host}[sharer]
		settle(t, host, guest, 10*time.Second, fmt.Sprintf("share round %d", i))
		viewer.waitScreen(1, 10*time.Second)
		sharer.click("share") // stop
		settle(t, host, guest, 10*time.Second, fmt.Sprintf("share round %d stopped", i))
	}
	t.Logf("offers crossed in %d of 20 rounds, %d of 5 after the reconnect", c1, c2)
	if c1 == 0 {
		t.Error("no offers ever crossed: the test did not test glare")
	}
	for _, tb := range []*tab{host, guest} {
		for _, line := range tb.snapshot(&tb.errors) {
			if strings.Contains(line, "ferry:") {
				t.Errorf("%s: %s", tb.name, line)
			}
		}
	}
	noErrs(t, host, guest)
	_ = slices.Contains[[]string]
}

func types(fs []map[string]any) []string {
	var out []string
	for _, f := range fs {
		s := fmt.Sprint(f["type"])
		if f["seq"] != nil {
			s += fmt.Sprint("#", f["seq"])
		}
		if f["code"] != nil {
			s += fmt.Sprint(":", f["code"])
		}
		out = append(out, s)
	}
	return out
}
