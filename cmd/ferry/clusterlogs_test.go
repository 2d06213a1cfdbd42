package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/config"
)

// The admin listener's data-subject endpoints answer only with the cluster's admin token,
// only POST, never a web page; they cover records still queued, and erase for real.
func TestDataSubjectEndpoints(t *testing.T) {
	log, err := alloclog.Open(context.Background(), alloclog.Config{Path: filepath.Join(t.TempDir(), alloclog.FileName)})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	ip := netip.MustParseAddr("203.0.113.7")
	log.HTTPRequest(alloclog.HTTPRequest{Time: time.Now(), ClientIP: ip, Route: "/v1/ice-servers", Status: 200})
	log.HTTPRequest(alloclog.HTTPRequest{Time: time.Now(), ClientIP: netip.MustParseAddr("198.51.100.1"), Route: "/v1/ice-servers", Status: 200})

	const token = "0123456789abcdef0123456789abcdef-token"
	s := &server{drainReq: make(chan struct{}, 1), alloclog: log, log: slog.New(slog.DiscardHandler)}
	f := &config.File{}
	s.conf.Store(f)
	h := s.adminHandler(http.NotFoundHandler())
	call := func(method, path, auth, origin, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	if code, _ := call("POST", dsrErasePath, token, "", `{"ip":"203.0.113.7"}`); code != http.StatusNotFound {
		t.Fatalf("without a configured token: %d", code)
	}
	f2 := *f
	f2.Cluster.AdminToken = token
	s.conf.Store(&f2)
	for _, c := range []struct {
		method, auth, origin, body string
		want                       int
	}{
		{"POST", "", "", `{"ip":"203.0.113.7"}`, 401},
		{"POST", "wrong-token-0123456789abcdef0123456789", "", `{"ip":"203.0.113.7"}`, 401},
		{"POST", token, "https://evil.example", `{"ip":"203.0.113.7"}`, 403},
		{"GET", token, "", "", 405},
		{"POST", token, "", `{}`, 400},
		{"POST", token, "", `{"ip":"not an ip"}`, 400},
		{"POST", token, "", `{"ip":"203.0.113.7","user":"u"}`, 400},
	} {
		if code, body := call(c.method, dsrErasePath, c.auth, c.origin, c.body); code != c.want {
			t.Errorf("%s auth=%q origin=%q %s: %d %s, want %d", c.method, c.auth, c.origin, c.body, code, body, c.want)
		}
	}
	code, body := call("POST", dsrExportPath, token, "", `{"ip":"203.0.113.7"}`)
	var exp dsrAnswer
	if code != 200 || json.Unmarshal([]byte(body), &exp) != nil || exp.Records == nil || len(exp.Records.HTTPRequests) != 1 {
		t.Fatalf("export: %d %s", code, body)
	}
	code, body = call("POST", dsrErasePath, token, "", `{"ip":"203.0.113.7"}`)
	var er dsrAnswer
	if code != 200 || json.Unmarshal([]byte(body), &er) != nil || er.Erased == nil || er.Erased.HTTPRequests != 1 {
		t.Fatalf("erase: %d %s", code, body)
	}
	recs, err := log.Store().Query(context.Background(), alloclog.Filter{IP: ip})
	if err != nil || len(recs.HTTPRequests) != 0 {
		t.Fatalf("after the erase: %+v %v", recs, err)
	}
	if recs, _ := log.Store().Query(context.Background(), alloclog.Filter{IP: netip.MustParseAddr("198.51.100.1")}); len(recs.HTTPRequests) != 1 {
		t.Fatal("the erase took another address's record")
	}
}
