package config

import (
	"slices"
	"strings"
	"testing"
)

// listenProblems returns the problems about listener addresses only (the test files name
// no certificate).
func listenProblems(t *testing.T, yaml string) []string {
	t.Helper()
	_, err := Load(Options{Path: write(t, yaml)})
	if err == nil {
		return nil
	}
	var out []string
	for _, l := range problemLines(t, err) {
		if strings.Contains(l, "is also in") {
			out = append(out, l)
		}
	}
	return out
}

// One port 443 may carry TURN over TLS, plain TURN over TCP and HTTPS together (a firewall
// that lets only TCP 443 out); HTTP joins TURN over TCP only through TLS, and no other pair
// may share an address.
func TestSharedPortListeners(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"tcp and tls", "turn:\n  tcp_listen: [\"0.0.0.0:3478\", \"0.0.0.0:443\"]\n  tls_listen: [\"0.0.0.0:443\"]\n", nil},
		{"tcp, tls and https", "turn:\n  tcp_listen: [\"0.0.0.0:443\"]\n  tls_listen: [\"0.0.0.0:443\"]\nhttp:\n  listen: \"0.0.0.0:443\"\n", nil},
		{"tls and https", "turn:\n  tls_listen: [\"0.0.0.0:443\"]\nhttp:\n  listen: \"0.0.0.0:443\"\n", nil},
		{"http with plain tcp", "turn:\n  tcp_listen: [\"0.0.0.0:443\"]\nhttp:\n  listen: \"0.0.0.0:443\"\n",
			[]string{`http.listen: "0.0.0.0:443" is also in turn.tcp_listen (HTTP shares a port with TURN only through TLS: add the address to turn.tls_listen too)`}},
		{"tls twice", "turn:\n  tcp_listen: [\"0.0.0.0:443\"]\n  tls_listen: [\"0.0.0.0:443\", \"0.0.0.0:443\"]\n",
			[]string{`turn.tls_listen: "0.0.0.0:443" is also in turn.tls_listen`}},
		{"admin on the shared port", "turn:\n  tcp_listen: [\"0.0.0.0:443\"]\n  tls_listen: [\"0.0.0.0:443\"]\nadmin:\n  listen: \"0.0.0.0:443\"\n",
			[]string{`admin.listen: "0.0.0.0:443" is also in turn.tls_listen`}},
		{"ephemeral ports never share", "turn:\n  tcp_listen: [\"127.0.0.1:0\"]\n  tls_listen: [\"127.0.0.1:0\"]\nhttp:\n  listen: \"127.0.0.1:0\"\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := listenProblems(t, c.yaml); !slices.Equal(got, c.want) {
				t.Fatalf("problems %q, want %q", got, c.want)
			}
		})
	}
}
