package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterSettings(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Cluster.Enabled() || f.Server.Role != RoleBoth || !f.RunsRelay() || !f.RunsSignaling() {
		t.Fatalf("defaults: %+v %q", f.Cluster, f.Server.Role)
	}
	dir := t.TempDir()
	token, pass := filepath.Join(dir, "token"), filepath.Join(dir, "pass")
	os.WriteFile(token, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(pass, []byte("s3cret-redis-password\nignored\n"), 0o600)
	f, err = Load(Options{Path: write(t, `
server: {role: signaling}
http: {ice_urls: ["turn:turn1.example:3478", "turns:[2001:db8::1]:443?transport=tcp", "stun:turn1.example"]}
cluster:
  redis_url: rediss://redis.internal:6380/2
  redis_password_file: `+pass+`
  admin_token_file: `+token+`
  node_id: signal-1
  region: eu-central
`)})
	if err != nil {
		t.Fatal(err)
	}
	if f.Cluster.RedisPassword != "s3cret-redis-password" || f.Cluster.AdminToken != "0123456789abcdef0123456789abcdef" || f.RunsRelay() {
		t.Fatalf("resolved: %+v", f.Cluster)
	}
	want := []ICEURL{{"turn", "turn1.example", 3478, "udp"}, {"turns", "2001:db8::1", 443, "tls"}, {"stun", "turn1.example", 3478, ""}}
	if got := f.ICEURLs(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("ice_urls: %+v", got)
	}
	out, err := f.Redacted()
	if err != nil || strings.Contains(string(out), "s3cret") || strings.Contains(string(out), "0123456789abcdef") {
		t.Fatalf("printed configuration holds a secret:\n%s", out)
	}
}

func TestClusterMistakesListedAtOnce(t *testing.T) {
	_, err := Load(Options{Path: write(t, `
server: {role: signaling}
http: {ice_urls: ["turn:host:99999", "http://example.org"]}
admin: {listen: ""}
cluster:
  redis_url: redis://user:pw@redis.internal:6379/0
  node_id: "bad id"
  heartbeat_interval: 2s
  heartbeat_ttl: 3s
  admin_url: ftp://x
`)})
	want := []string{
		`http.ice_urls: "turn:host:99999": port must be 1-65535`,
		`http.ice_urls: "http://example.org" is not a stun:, turn: or turns: URL`,
		"cluster.redis_url: holds a password: put it in cluster.redis_password_file instead",
		`cluster.node_id: "bad id": 1-64 characters of A-Z a-z 0-9 . _ -`,
		"cluster.heartbeat_ttl: must be at least twice cluster.heartbeat_interval (2s) and at most 10m, got 3s",
		`cluster.admin_url: "ftp://x" is not a URL like http://10.0.0.5:9641`,
		"cluster.admin_token_file: required with cluster.redis_url: ferry logs --cluster authenticates with it on every node (make one with: ferry secret new)",
		"cluster.redis_url: needs admin.listen: data-subject requests reach every node through its admin listener",
	}
	if got := problemLines(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	_, err = Load(Options{Path: write(t, "server: {role: signaling}\n")})
	if got := problemLines(t, err); len(got) != 1 || !strings.HasPrefix(got[0], "server.role: signaling runs no relay: list the relays' URLs in http.ice_urls") {
		t.Errorf("signaling without ice_urls: %q", got)
	}
	_, err = Load(Options{Path: write(t, "server: {role: proxy}\n")})
	if got := problemLines(t, err); len(got) != 1 || got[0] != `server.role: "proxy" is not both, relay or signaling` {
		t.Errorf("unknown role: %q", got)
	}
	// A signaling node needs no TURN listener and no relay address.
	if _, err := Load(Options{Path: write(t, "server: {role: signaling}\nhttp: {ice_urls: [\"turn:t.example\"]}\nturn: {udp_listen: [], tcp_listen: []}\nrelay: {bind_ip: \"\"}\n")}); err != nil {
		t.Errorf("signaling without listeners: %v", err)
	}
}
