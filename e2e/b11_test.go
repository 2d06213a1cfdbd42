package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// b11Call is how long each variant's call runs before the checks (browser-cases.md: 20 s).
const b11Call = 20 * time.Second

// answerDirections returns the direction of each audio and video section of the SDP answers
// and offers the page sent.
func sentDirections(tb *tab) []string {
	var out []string
	mline := regexp.MustCompile(`(?m)^m=(audio|video) `)
	for _, f := range tb.frames(true) {
		if f["type"] != "offer" && f["type"] != "answer" {
			continue
		}
		sdp, _ := f["sdp"].(string)
		sections := mline.FindAllStringIndex(sdp, -1)
		for i, s := range sections {
			end := len(sdp)
			if i+1 < len(sections) {
				end = sections[i+1][0]
			}
			sec := sdp[s[0]:end]
			dir := regexp.MustCompile(`(?m)^a=(sendrecv|recvonly|sendonly|inactive)`).FindStringSubmatch(sec)
			kind := strings.Fields(sec)[0]
			if dir != nil {
				out = append(out, kind+":"+dir[1])
			}
		}
	}
	return out
}

// b11Variant is one guest of B11.
type b11Variant struct {
	name    string
	lang    string
	setup   func(t *testing.T, g *tab)
	status  string // media-status data-video
	message string // a phrase of the explanation
	audio   bool   // the host receives guest audio
	strict  bool   // the guest's browser blocks autoplay without a gesture
	hook    string // an init script (the busy camera)
	perms   bool   // permissions from Browser.setPermission
}

// B11: a patient without camera permission, without any, with a busy camera, or whose
// browser blocks autoplay still joins, sees and hears the practitioner, gets a specific
// de/en explanation; the practitioner sees a "camera off" placeholder, never a black or
// frozen video; granting the camera and retrying brings the video through a renegotiation;
// a blocked autoplay shows "tap to start" and plays after one trusted click.
func TestB11ImperfectDevices(t *testing.T) {
	e := startPageFerry(t, "  page:\n    enabled: true\n")
	variants := []b11Variant{
		{name: "camera denied", lang: "en-US", status: "denied", message: "You blocked the camera", audio: true, perms: true,
			setup: func(t *testing.T, g *tab) {
				g.setPermission(e.base, "camera", false)
				g.setPermission(e.base, "microphone", true)
			}},
		// Without capture Chromium never lets sound play before a gesture: the tap-to-start path.
		{name: "both denied", lang: "de-DE", status: "denied", message: "Sie haben das Mikrofon für diese Seite blockiert", audio: false, strict: true, perms: true,
			setup: func(t *testing.T, g *tab) {
				g.setPermission(e.base, "camera", false)
				g.setPermission(e.base, "microphone", false)
			}},
		{name: "camera busy", lang: "de-DE", status: "busy", message: "Die Kamera wird von einem anderen Programm benutzt", audio: true,
			hook: `window.__gumHook = (c, gum) => c.video ? Promise.reject(new DOMException('Could not start video source', 'NotReadableError')) : gum(c);`},
		{name: "autoplay blocked", lang: "en-US", status: "ok", audio: true, strict: true},
	}
	for _, v := range variants {
		t.Run(strings.ReplaceAll(v.name, " ", "-"), func(t *testing.T) { runB11(t, e, v) })
	}
}

// runB11 runs one variant: knock, admit, a call of b11Call, and the checks.
func runB11(t *testing.T, e *pageEnv, v b11Variant) {
	hostLink, guestLink := e.room(t)
	host := openTab(t, "host", browserOpts{spki: e.spki, width: 1024, height: 768})
	guest := openTab(t, "guest", browserOpts{spki: e.spki, lang: v.lang, strictAutoplay: v.strict, init: v.hook, permissions: v.perms})
	if v.setup != nil {
		guest.navigate("about:blank")
		v.setup(t, guest)
	}
	host.navigate(hostLink)
	guest.navigate(guestLink)
	guest.waitJS(`document.getElementById('media-status').dataset.video`, 15*time.Second, "media acquired")
	if got := guest.eval(`document.getElementById('media-status').dataset.video`); got != v.status {
		t.Fatalf("guest camera status %v, want %s", got, v.status)
	}
	if v.message != "" {
		if text, _ := guest.eval(`document.getElementById('media-status').textContent`).(string); !strings.Contains(text, v.message) {
			t.Fatalf("guest's explanation %q lacks %q", text, v.message)
		}
	}
	checkRelayOnly(t, host, guest)
	// Every guest action is a JS click (no user activation) in the autoplay variant.
	host.click("join")
	host.waitJS(`document.body.dataset.view === 'call'`, 10*time.Second, "host in")
	guest.jsClick(`[data-testid=join]`)
	host.waitJS(`document.querySelector('[data-testid=knock] [data-testid=admit]')`, 10*time.Second, "knock")
	host.click("admit")
	guest.waitMedia(15*time.Second, true, true) // the guest decodes the host's video and hears it
	time.Sleep(b11Call)
	gs := guest.stats()[0]
	hs := host.stats()[0]
	later := guest.waitMedia(5*time.Second, true, true)
	if later.Samples <= gs.Samples {
		t.Errorf("guest's received audio samples stopped: %v -> %v", gs.Samples, later.Samples)
	}
	for _, d := range sentDirections(guest) {
		if !strings.HasSuffix(d, ":sendrecv") && !strings.HasSuffix(d, ":recvonly") {
			t.Errorf("guest sent a section %s: it must receive audio and video", d)
		}
	}
	if len(sentDirections(guest)) < 2 {
		t.Errorf("guest sent no audio/video sections: %v", sentDirections(guest))
	}
	if v.audio != (hs.AudioBytes > 0) {
		t.Errorf("host received %v audio bytes from the guest (want audio: %v)", hs.AudioBytes, v.audio)
	}
	if v.status != "ok" {
		if hs.Frames != 0 {
			t.Errorf("host decoded %v frames from a guest without camera", hs.Frames)
		}
		host.waitJS(`document.querySelector('.tile.remote').dataset.camera === 'off' && !document.querySelector('[data-testid=camera-off]').hidden`, 5*time.Second, "camera-off placeholder on the host")
	}
	// Chat works in every variant.
	guest.eval(`document.querySelector('[data-testid=chat-input]').value = 'hallo'; document.querySelector('[data-testid=chat-send]').click()`)
	host.waitJS(`document.querySelector('[data-testid=chat-log]').textContent.includes('hallo')`, 5*time.Second, "guest's chat")
	if v.strict {
		b11Autoplay(t, v, guest)
	}
	if v.name == "camera denied" {
		b11Retry(t, e, host, guest)
	}
	staticChecks(t, host, guest)
	noErrs(t, host, guest)
}

// b11Autoplay: remote video and sound play; where Chromium blocks them, after one trusted
// click on the page's tap-to-start control.
func b11Autoplay(t *testing.T, v b11Variant, guest *tab) {
	t.Helper()
	// Chromium lets a page that captures camera or microphone play sound without a
	// gesture; otherwise play() rejects and the page must offer tap-to-start.
	paused := guest.eval(`document.querySelector('[data-testid=remote-video]').paused`) == true
	if paused || v.status != "ok" {
		guest.waitJS(`!document.querySelector('[data-testid=start-media]').hidden`, 5*time.Second, "the tap-to-start control")
		guest.click("start-media") // one trusted click
	} else {
		t.Log("Chromium allowed playback without a gesture: the page captures the microphone")
	}
	guest.waitJS(`(() => { const v = document.querySelector('[data-testid=remote-video]'); return !v.paused && !v.muted && document.querySelector('[data-testid=start-media]').hidden; })()`, 5*time.Second, "remote video and sound playing")
}

// b11Retry grants the camera and uses the page's retry: the host decodes the guest's video
// within 10 s, through a renegotiation, and the placeholder goes.
func b11Retry(t *testing.T, e *pageEnv, host, guest *tab) {
	t.Helper()
	guest.setPermission(e.base, "camera", true)
	offers := countSRD(host)
	guest.click("media-retry")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := host.stats(); len(s) == 1 && s[0].Frames > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("host decodes no guest video within 10 s of the retry")
		}
		time.Sleep(300 * time.Millisecond)
	}
	if countSRD(host) == offers {
		t.Error("the camera came without a renegotiation")
	}
	host.waitJS(`document.querySelector('.tile.remote').dataset.camera === 'on'`, 5*time.Second, "placeholder gone")
}

// countSRD counts the setRemoteDescription calls the page made.
func countSRD(tb *tab) float64 {
	n, _ := tb.eval(`window.__log.filter((e) => e.call === 'setRemoteDescription').length`).(float64)
	return n
}

// staticChecks: every <video> has playsinline and autoplay, the local preview is muted,
// and srcObject was set at most once per remote stream.
func staticChecks(t *testing.T, tabs ...*tab) {
	t.Helper()
	for _, tb := range tabs {
		if got := tb.eval(`[...document.querySelectorAll('video')].every((v) => v.hasAttribute('playsinline') && v.hasAttribute('autoplay'))`); got != true {
			t.Errorf("%s: a <video> lacks playsinline or autoplay", tb.name)
		}
		if got := tb.eval(`document.getElementById('local-video').muted`); got != true {
			t.Errorf("%s: the local preview is not muted", tb.name)
		}
		if got := tb.eval(`(() => { const n = {}; for (const s of window.__srcSets) if (s.el === 'remote-video' && s.stream) n[s.stream] = (n[s.stream] || 0) + 1; return Object.values(n).every((c) => c === 1); })()`); got != true {
			t.Errorf("%s: srcObject set more than once per remote stream: %v", tb.name, tb.eval(`window.__srcSets`))
		}
	}
}
