package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/signaling"
)

// When turn.tcp_listen, turn.tls_listen and http.listen name one address, serve opens one
// socket: plain TURN, TURN over TLS and HTTPS are three listeners on that port, and the ICE
// servers list turn:HOST:PORT?transport=tcp and turns:HOST:PORT?transport=tcp for it (as
// `ferry credentials --json` does from the configuration alone).
func TestSharedPortSockets(t *testing.T) {
	dir := t.TempDir()
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	shared := probe.Addr().String()
	probe.Close()
	f, err := config.Load(config.Options{Environ: []string{
		"FERRY_SERVER_PUBLIC_HOST=turn.clinic.example",
		"FERRY_TURN_UDP_LISTEN=127.0.0.1:0", "FERRY_TURN_TCP_LISTEN=127.0.0.1:0," + shared,
		"FERRY_TURN_TLS_LISTEN=" + shared, "FERRY_HTTP_LISTEN=" + shared, "FERRY_ADMIN_LISTEN=",
		"FERRY_TURN_TLS_CERT_FILE=" + testCert(t, dir), "FERRY_TURN_TLS_KEY_FILE=" + filepath.Join(dir, "key.pem"),
		"FERRY_RELAY_BIND_IP=127.0.0.1", "FERRY_SERVER_DATA_DIR=" + dir}})
	if err != nil {
		t.Fatal(err)
	}
	tlsc, err := loadTLS(f.TURN.TLSCertFile, f.TURN.TLSKeyFile, "", "", func(string, time.Time) {})
	if err != nil {
		t.Fatal(err)
	}
	s, err := openSockets(context.Background(), f, tlsc, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if len(s.muxes) != 1 || len(s.tcp) != 2 || len(s.tls) != 1 || !s.httpShared || len(s.raw) != 0 {
		t.Fatalf("%d shared ports, %d TCP, %d TLS listeners, HTTP shared %t, %d plain TLS sockets",
			len(s.muxes), len(s.tcp), len(s.tls), s.httpShared, len(s.raw))
	}
	_, tcp, tls := s.addrs()
	port := portsOf([]net.Addr{s.muxes[0].Addr()})[0]
	if got := portsOf(tcp); got[1] != port || got[0] == port || portsOf(tls)[0] != port || portsOf([]net.Addr{s.http.Addr()})[0] != port {
		t.Fatalf("TCP ports %v, TLS %v, HTTP %v: want the shared port %d for TLS, HTTP and the second TCP", got, portsOf(tls), s.http.Addr(), port)
	}
	want := []string{fmt.Sprintf("turn:turn.clinic.example:%d?transport=tcp", port), fmt.Sprintf("turns:turn.clinic.example:%d?transport=tcp", port)}
	for name, urls := range map[string][]signaling.URL{
		"running":    signaling.BuildURLs("turn.clinic.example", nil, portsOf(tcp), portsOf(tls)),
		"configured": configuredURLs(f),
	} {
		var got []string
		for _, u := range urls {
			got = append(got, u.String())
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: URLs %q lack %s", name, got, w)
			}
		}
	}

	// A STUN message on the shared port reaches the plain TURN listener.
	c, err := net.Dial("tcp4", shared)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42}); err != nil {
		t.Fatal(err)
	}
	got := make(chan net.Conn, 1)
	go func() {
		conn, err := s.tcp[1].Accept()
		if err == nil {
			got <- conn
		}
	}()
	select {
	case conn := <-got:
		conn.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a STUN message on the shared port did not reach TURN over TCP")
	}
}
