// Package web is Ferry's consultation page and connection check page: plain HTML, CSS and
// JavaScript embedded in the binary, served at /r/{room} and /check with headers that keep
// them on their own origin.
package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed static
var static embed.FS

// DefaultMaxFileBytes is the file size limit when Config names none (100 MiB).
const DefaultMaxFileBytes = 100 << 20

// Config configures the page.
type Config struct {
	// MaxFileBytes is the largest file, in bytes, the page sends or accepts over its data
	// channel; zero means DefaultMaxFileBytes.
	MaxFileBytes int64
}

// Page serves the consultation page and its assets. Create it with New.
type Page struct {
	index  []byte            // rendered once: the page is the same for every room
	check  []byte            // the check page (check.html)
	assets map[string][]byte // file name -> content
}

// AssetPrefix is the path under which the page's scripts, styles and icon are served.
const AssetPrefix = "/assets/"

// Security headers of every response: nothing but Ferry's own origin, no referrer, no
// cookies (none are set), camera, microphone and display capture for this origin only.
var headers = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; " +
		"media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'none'; object-src 'none'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"Referrer-Policy":              "no-referrer",
	"Permissions-Policy":           "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=(), usb=(), serial=(), hid=(), midi=()",
	"X-Content-Type-Options":       "nosniff",
	"X-Frame-Options":              "DENY",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
	"Cache-Control":                "no-store",
}

// New renders the page for cfg.
func New(cfg Config) (*Page, error) {
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = DefaultMaxFileBytes
	}
	tmpl, err := template.ParseFS(static, "static/index.html")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, map[string]string{"MaxFileBytes": strconv.FormatInt(cfg.MaxFileBytes, 10)}); err != nil {
		return nil, fmt.Errorf("web: render: %w", err)
	}
	check, err := fs.ReadFile(static, "static/check.html")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	p := &Page{index: b.Bytes(), check: check, assets: map[string][]byte{}}
	entries, err := fs.ReadDir(static, "static")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "index.html" || e.Name() == "check.html" {
			continue
		}
		data, err := fs.ReadFile(static, "static/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		p.assets[e.Name()] = data
	}
	return p, nil
}

func setHeaders(w http.ResponseWriter, contentType string) {
	for k, v := range headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", contentType)
}

// ServeRoom answers GET /r/{room} with the page; the caller has checked the room id. The
// room token stays in the URL fragment, which the browser never sends.
func (p *Page) ServeRoom(w http.ResponseWriter, r *http.Request) {
	setHeaders(w, "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(p.index)
}

// ServeCheck answers GET /check with the connection check page. Its token stays in the URL
// fragment, which the browser never sends.
func (p *Page) ServeCheck(w http.ResponseWriter, r *http.Request) {
	setHeaders(w, "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(p.check)
}

// ServeAsset answers GET /assets/{name} with an embedded file, or 404.
func (p *Page) ServeAsset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, AssetPrefix)
	data, ok := p.assets[name]
	if !ok || strings.Contains(name, "/") {
		setHeaders(w, "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("not found\n"))
		return
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	setHeaders(w, ct)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}
