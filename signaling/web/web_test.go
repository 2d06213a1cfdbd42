package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, p *Page, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if strings.HasPrefix(path, AssetPrefix) {
		p.ServeAsset(w, r)
	} else {
		p.ServeRoom(w, r)
	}
	return w
}

// Every response carries the privacy headers: a CSP that allows this origin only (blob: and
// mediastream: for media), no referrer, capture features for this origin only, no caching.
func TestHeaders(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/r/room", "/assets/app.js", "/assets/page.css", "/assets/missing.js"} {
		h := serve(t, p, path).Header()
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "media-src 'self' blob: mediastream:"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") || strings.Contains(csp, "*") {
			t.Errorf("%s: CSP %q allows more than this origin", path, csp)
		}
		if h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", path, h)
		}
		pp := h.Get("Permissions-Policy")
		for _, f := range []string{"camera=(self)", "microphone=(self)", "display-capture=(self)", "geolocation=()"} {
			if !strings.Contains(pp, f) {
				t.Errorf("%s: Permissions-Policy %q lacks %s", path, pp, f)
			}
		}
		if h.Get("Set-Cookie") != "" {
			t.Errorf("%s sets a cookie", path)
		}
	}
	if w := serve(t, p, "/assets/missing.js"); w.Code != http.StatusNotFound {
		t.Errorf("missing asset: %d", w.Code)
	}
	if ct := serve(t, p, "/assets/app.js").Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("app.js served as %q", ct)
	}
}

// The page loads nothing from another origin and runs no inline script or style: every
// src/href is a local path, and no element carries an event handler or style attribute.
func TestPageIsSelfContained(t *testing.T) {
	p, err := New(Config{MaxFileBytes: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	html := serve(t, p, "/r/room").Body.String()
	if !strings.Contains(html, `data-max-file-bytes="5242880"`) {
		t.Error("the file limit is not in the page")
	}
	for _, m := range regexp.MustCompile(`(?i)(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1) {
		if u := m[1]; !strings.HasPrefix(u, "/assets/") && !strings.HasPrefix(u, "#") {
			t.Errorf("the page refers to %q", u)
		}
		if name := strings.TrimPrefix(m[1], "/assets/"); strings.HasPrefix(m[1], "/assets/") && p.assets[name] == nil {
			t.Errorf("the page refers to a missing asset %s", m[1])
		}
	}
	if regexp.MustCompile(`(?i)\son[a-z]+=|\sstyle=|<script>|<style`).MatchString(html) {
		t.Error("the page has inline script, handlers or styles, which the CSP blocks")
	}
	for name, data := range p.assets {
		s := strings.ReplaceAll(string(data), `xmlns="http://www.w3.org/2000/svg"`, "") // a name, not a request
		for _, banned := range []string{"localStorage", "sessionStorage", "indexedDB", "document.cookie", "innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "http://", "https://"} {
			if strings.Contains(s, banned) {
				t.Errorf("%s uses %s", name, banned)
			}
		}
	}
	// Every control the tests and clinics drive has a stable data-testid.
	for _, id := range []string{"join", "mute", "camera", "share", "chat-input", "chat-send", "file-input", "hangup", "relay-only", "lang", "conn-test"} {
		if !strings.Contains(html, `data-testid="`+id+`"`) {
			t.Errorf("no data-testid %q", id)
		}
	}
	if !strings.Contains(string(p.assets["app.js"]), `'data-testid': action`) {
		t.Error("admit/deny/return buttons have no data-testid")
	}
}

// The check page is as self-contained as the consultation page, under the same headers, and
// its scripts and styles exist.
func TestCheckPage(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	p.ServeCheck(w, httptest.NewRequest(http.MethodGet, "/check", nil))
	html := w.Body.String()
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(w.Header().Get("Content-Security-Policy"), "script-src 'self'") || w.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	for _, m := range regexp.MustCompile(`(?i)(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1) {
		if name, ok := strings.CutPrefix(m[1], "/assets/"); (!ok || p.assets[name] == nil) && !strings.HasPrefix(m[1], "#") {
			t.Errorf("the check page refers to %q", m[1])
		}
	}
	if regexp.MustCompile(`(?i)\son[a-z]+=|\sstyle=|<script>|<style`).MatchString(html) {
		t.Error("the check page has inline script, handlers or styles, which the CSP blocks")
	}
	for _, id := range []string{"results", "verdict", "again", "report", "candidates", "errors", "lang"} {
		if !strings.Contains(html, `data-testid="`+id+`"`) {
			t.Errorf("no data-testid %q", id)
		}
	}
	if p.assets["check.html"] != nil || p.assets["check.js"] == nil {
		t.Error("check.html is served as an asset, or check.js is not")
	}
}
