package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
)

// storageJS lists what the page's storage APIs hold.
const storageJS = `(async () => ({
  cookie: document.cookie,
  local: localStorage.length,
  session: sessionStorage.length,
  idb: (await indexedDB.databases()).length,
  caches: (await caches.keys()).length,
  usage: (await navigator.storage.estimate()).usage,
}))()`

// checkPrivacy asserts that the page set no cookie, left nothing in any storage API and sent
// no request to another origin than Ferry's (network log).
func checkPrivacy(t *testing.T, tb *tab, base string) {
	t.Helper()
	st, err := evalJS[map[string]any](tb, storageJS)
	if err != nil {
		t.Fatalf("%s: storage: %v", tb.name, err)
	}
	for k, v := range st {
		if v != "" && v != float64(0) {
			t.Errorf("%s: storage %s holds %v", tb.name, k, v)
		}
	}
	cookies, err := chromedp.Call(tb.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil || len(cookies.Cookies) > 0 {
		t.Errorf("%s: cookies %v (%v)", tb.name, cookies.Cookies, err)
	}
	usage, err := chromedp.Call(tb.ctx, storage.GetUsageAndQuota, storage.GetUsageAndQuotaParams{Origin: base})
	if err != nil {
		t.Errorf("%s: usage: %v", tb.name, err)
	} else {
		for _, u := range usage.UsageBreakdown {
			if u.Usage > 0 {
				t.Errorf("%s: %s storage holds %v bytes", tb.name, u.StorageType, u.Usage)
			}
		}
	}
	urls := tb.snapshot(&tb.urls)
	if len(urls) < 3 {
		t.Errorf("%s: only %d requests logged", tb.name, len(urls))
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "blob:"+base+"/") && u != "about:blank" {
			t.Errorf("%s: request to another origin: %s", tb.name, u)
		}
	}
}

// The page speaks the browser's language, German or English, and switches on request; it
// works with the keyboard alone; and it stores nothing and asks no other origin.
func TestPageLanguages(t *testing.T) {
	e := startPageFerry(t, "  page:\n    enabled: true\n")
	_, guestLink := e.room(t)
	// The last text is the file limit: the default 100MiB in the config's binary unit (it
	// once said 104.9 MB).
	texts := map[string][]string{
		"de-DE": {"de", "Videosprechstunde", "Beitreten", "Vor dem Beitreten", "English", "Dateien bis 100 MiB"},
		"en-US": {"en", "Video consultation", "Join", "Before you join", "Deutsch", "Files up to 100 MiB"},
	}
	tabs := map[string]*tab{}
	for lang := range texts {
		tabs[lang] = openTab(t, lang, browserOpts{lang: lang, spki: e.spki})
		tabs[lang].navigate(guestLink)
	}
	const read = `[document.documentElement.lang, document.getElementById('heading').textContent, document.querySelector('[data-testid=join]').textContent, document.getElementById('prejoin-heading').textContent, document.querySelector('[data-testid=lang]').textContent,
		document.getElementById('file-limit').textContent.split('. ')[0]]`
	for lang, want := range texts {
		tb := tabs[lang]
		tb.waitJS(`document.getElementById('media-status').textContent !== ''`, 15*time.Second, "page ready")
		if got := strings.Join(toStrings(tb.eval(read)), "|"); got != strings.Join(want, "|") {
			t.Errorf("%s: %s, want %s", lang, got, strings.Join(want, "|"))
		}
		if status := tb.eval(`document.getElementById('media-status').textContent`); lang == "de-DE" && status != "Kamera und Mikrofon sind bereit." {
			t.Errorf("de-DE media status %q", status)
		}
	}
	tabs["de-DE"].click("lang")
	if got := strings.Join(toStrings(tabs["de-DE"].eval(read)), "|"); got != strings.Join(texts["en-US"], "|") {
		t.Errorf("after the switch: %s", got)
	}
	// Keyboard only: Tab reaches Join after the controls above it, and Enter joins.
	en := tabs["en-US"]
	var order []string
	for range 30 {
		if err := chromedp.Do(en.ctx, chromedp.KeyEvent("\t")); err != nil {
			t.Fatal(err)
		}
		id, _ := en.eval(`document.activeElement.dataset.testid || document.activeElement.id || document.activeElement.tagName`).(string)
		order = append(order, id)
		if id == "join" {
			break
		}
	}
	// Focus starts at the view's heading; the controls follow in reading order.
	want := []string{"camera-select", "mic-select", "name-input", "conn-test", "relay-only", "join"}
	pos := 0
	for _, id := range order {
		if pos < len(want) && id == want[pos] {
			pos++
		}
	}
	if pos != len(want) {
		t.Fatalf("tab order %v, want %v in this order", order, want)
	}
	t.Logf("tab order: %v", order)
	if err := chromedp.Do(en.ctx, chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	en.waitJS(`document.body.dataset.view === 'waiting'`, 10*time.Second, "joined with the keyboard")
	for _, tb := range tabs {
		checkPrivacy(t, tb, e.base)
	}
	noErrs(t, tabs["de-DE"], tabs["en-US"])
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
