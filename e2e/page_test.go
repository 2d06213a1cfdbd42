package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeFile writes n deterministic pseudo-random bytes to dir/name and returns the path and
// the content's SHA-256.
func writeFile(t *testing.T, dir, name string, n int64) (string, string) {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seed [32]byte
	seed[0], seed[1] = byte(n), byte(n>>8)
	r := rand.NewChaCha8(seed)
	buf := make([]byte, 1<<20)
	h := newHasher()
	for left := n; left > 0; {
		k := min(int64(len(buf)), left)
		_, _ = r.Read(buf[:k])
		if _, err := f.Write(buf[:k]); err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:k])
		left -= k
	}
	return path, h.hex()
}

// shotsDir is where screenshots go: the test's temp directory, or $E2E_SCREENSHOTS to
// keep them (make screenshots).
func shotsDir(t *testing.T) string {
	if d := os.Getenv("E2E_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// The "done when": a practitioner creates a room with `ferry room create` and opens
// the host link; the patient opens the guest link in a phone-sized window, knocks and is
// admitted; relay only, both see and hear each other through Ferry (getStats: relay pairs,
// decoded frames, audio bytes on both sides), chat, send a 5 MB file that arrives intact,
// and share a screen the other side decodes. Screenshots of the waiting room, the call and
// the screen share land in the test's temp directory.
func TestPageCall(t *testing.T) {
	e := startPageFerry(t, "  page:\n    max_file_size: 50MiB\n")
	hostLink, guestLink := e.room(t, "--host-name", "Dr. Weiß")
	host, guest := openPair(t, e, hostLink, guestLink, browserOpts{}, browserOpts{})
	shots := shotsDir(t)
	checkRelayOnly(t, host, guest)
	guest.eval(`document.querySelector('[data-testid=name-input]').value = 'Frau Müller'`)
	host.waitJS(`document.querySelector('[data-testid=conn-verdict]').dataset.result === 'test.good'`, 20*time.Second, "connection test")
	for _, tr := range []string{"udp", "tcp", "tls"} {
		if ok := host.eval(`document.querySelector('[data-testid=test-` + tr + `]').dataset.ok`); ok != "true" {
			t.Errorf("connection test over %s: %v", tr, ok)
		}
	}

	host.click("join")
	host.waitJS(`document.body.dataset.view === 'call'`, 15*time.Second, "host in the call view")
	guest.click("join")
	guest.waitJS(`document.body.dataset.view === 'waiting'`, 15*time.Second, "guest waiting")
	host.waitJS(`[...document.querySelectorAll('[data-testid=knock] .name')].some((e) => e.textContent === 'Frau Müller')`, 15*time.Second, "the knock with the guest's name")
	guest.screenshot(shots, "guest-waiting-room")
	host.screenshot(shots, "host-waiting-room")
	host.click("admit")
	guest.waitJS(`document.body.dataset.view === 'call'`, 15*time.Second, "guest admitted")

	hs := host.waitMedia(20*time.Second, true, true)
	gs := guest.waitMedia(20*time.Second, true, true)
	t.Logf("host: %+v\nguest: %+v", hs, gs)
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`document.querySelector('[data-testid=conn-path]').dataset.path === 'relay'`, 10*time.Second, "the page says relayed")
		tb.waitJS(`document.querySelector('[data-testid=remote-video]') && !document.querySelector('[data-testid=remote-video]').paused`, 10*time.Second, "remote video playing")
	}

	// Chat, both ways.
	host.eval(`document.querySelector('[data-testid=chat-input]').value = 'Guten Tag, wie geht es Ihnen?'`)
	host.click("chat-send")
	guest.waitJS(`document.querySelector('[data-testid=chat-log]').textContent.includes('Guten Tag, wie geht es Ihnen?')`, 5*time.Second, "host's chat message")
	guest.eval(`document.querySelector('[data-testid=chat-input]').value = '<b>Besser</b>, danke'`)
	guest.click("chat-send")
	host.waitJS(`document.querySelector('[data-testid=chat-log]').textContent.includes('<b>Besser</b>, danke')`, 5*time.Second, "guest's chat message as text")

	// A 5 MB file from the guest.
	path, want := writeFile(t, t.TempDir(), "befund.pdf", 5_000_000)
	guest.setFile(path)
	host.waitJS(`document.querySelector('[data-testid=transfer][data-dir=in][data-state=done]')`, 60*time.Second, "the file arrives")
	guest.waitJS(`document.querySelector('[data-testid=transfer][data-dir=out][data-state=done] [data-testid=file-progress]').value === 100`, 10*time.Second, "sender's progress at 100 %")
	if got := host.eval(`document.querySelector('[data-testid=transfer][data-dir=in] [data-testid=file-progress]').value`); got != float64(100) {
		t.Errorf("receiver's progress bar: %v", got)
	}
	if got := host.download("befund.pdf"); got != want {
		t.Fatalf("received file SHA-256 %v, want %s", got, want)
	}
	host.screenshot(shots, "host-call")
	guest.screenshot(shots, "guest-call")

	// Screen share from the host: the guest decodes a second video.
	host.click("share")
	guest.waitJS(`!document.getElementById('screen-tile').hidden`, 15*time.Second, "the shared screen shows")
	guest.waitScreen(10, 15*time.Second)
	guest.screenshot(shots, "guest-screen-share")
	host.screenshot(shots, "host-screen-share")
	noErrs(t, host, guest)

	// Hang up: both leave, nothing stays behind in either browser.
	guest.click("hangup")
	guest.waitJS(`document.getElementById('ended-text').dataset.reason === 'ended.left'`, 5*time.Second, "the guest left")
	host.waitJS(`document.querySelectorAll('[data-testid=remote-video]').length === 0`, 5*time.Second, "the guest's video gone on the host")
	host.click("hangup")
	for _, tb := range []*tab{host, guest} {
		tb.waitJS(`window.__pcs.every((pc) => pc.connectionState === 'closed') && !document.getElementById('local-video').srcObject`, 5*time.Second, "every PeerConnection closed, camera released")
		checkPrivacy(t, tb, e.base)
	}
	fmt.Fprintln(os.Stderr, "screenshots in", shots)
}
