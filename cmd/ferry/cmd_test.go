package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
)

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

// `ferry credentials` mints a REST credential the relay accepts, from the same secret that
// `ferry serve` generates in the data directory.
func TestCredentialsCommand(t *testing.T) {
	dir := t.TempDir()
	out, _, err := runCmd(t, "credentials", "--data-dir", dir, "--user", "dr:smith", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	var username, password string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "username: "); ok {
			username = v
		}
		if v, ok := strings.CutPrefix(line, "password: "); ok {
			password = v
		}
	}
	secret, err := os.ReadFile(filepath.Join(dir, secretFileName))
	if err != nil {
		t.Fatalf("no generated secret: %v", err)
	}
	a, _ := auth.New(auth.Config{Secrets: []string{strings.TrimSpace(string(secret))}, MaxTTL: 24 * 3600e9})
	id, err := a.Lookup(username)
	if err != nil || id.UserID != "dr:smith" || id.Passwords[0] != password {
		t.Fatalf("minted %q/%q does not verify: %v", username, password, err)
	}

	out, _, err = runCmd(t, "credentials", "--data-dir", dir, "--user", "u1", "--json", "--public-host", "turn.clinic.example")
	if err != nil {
		t.Fatal(err)
	}
	var entry struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	}
	if err := json.Unmarshal([]byte(out), &entry); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	want := []string{"turn:turn.clinic.example:3478?transport=udp", "turn:turn.clinic.example:3478?transport=tcp"}
	if strings.Join(entry.URLs, " ") != strings.Join(want, " ") || entry.Username == "" || entry.Credential == "" {
		t.Fatalf("iceServers entry: %+v", entry)
	}

	if _, _, err := runCmd(t, "credentials", "--data-dir", dir, "--user", "u", "--ttl", "48h"); err == nil {
		t.Fatal("a TTL above auth.max_ttl must be refused")
	}
	if _, _, err := runCmd(t, "credentials", "--data-dir", dir); err == nil {
		t.Fatal("--user is required")
	}
}

func TestConfigCommands(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("relay:\n  allowed_peers: [nonsense]\n  port_min: 10\nturn:\n  realm: \"\"\n"), 0o600)
	_, _, err := runCmd(t, "config", "validate", "--config", bad)
	if err == nil || !strings.Contains(err.Error(), "3 problem(s)") {
		t.Fatalf("validate: %v", err)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("auth:\n  secrets: [a-very-secret-secret-value]\n"), 0o600)
	out, _, err := runCmd(t, "config", "validate", "--config", good)
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("validate good: %v %s", err, out)
	}
	out, _, err = runCmd(t, "config", "print", "--config", good)
	if err != nil || strings.Contains(out, "a-very-secret-secret-value") || !strings.Contains(out, "<redacted>") {
		t.Fatalf("print must redact secrets: %v\n%s", err, out)
	}
}

// Start-up warns when relayed addresses cannot be reached from the internet, and only then.
func TestRelayAddressWarnings(t *testing.T) {
	for _, tc := range []struct {
		bind, adv, bind6, want string
	}{
		{bind: "10.0.0.5", want: "private"},
		{bind: "192.0.2.2", want: "documentation"},
		{bind: "100.64.1.1", want: "cgnat"},
		{bind: "127.0.0.1", want: "loopback"},
		{bind: "10.0.0.5", adv: "198.51.100.7"}, // advertised: the operator has said
		{bind: "8.8.8.8"},
		{bind: "8.8.8.8", bind6: "fd00::1", want: "relay.bind_ipv6"},
	} {
		f, err := config.Load(config.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.Relay.BindIP = config.AutoAddr{Addr: addr(tc.bind)}
		f.Relay.AdvertisedIP, f.Relay.BindIPv6 = addr(tc.adv), addr(tc.bind6)
		var warnings []string
		relayIPs(f, func(m string) { warnings = append(warnings, m) })
		got := strings.Join(warnings, "\n")
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%+v: warnings %q, want %q", tc, got, tc.want)
		}
	}
}

// addr parses an IP address; "" is the zero Addr.
func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

// The GC target: runtime.gogc, else GOGC (already applied by the runtime), else 50.
func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		configured int
		env        string
		want       int
	}{{0, "", defaultGOGC}, {0, "80", 0}, {30, "80", 30}, {120, "", 120}} {
		if got := gcPercent(tc.configured, tc.env); got != tc.want {
			t.Errorf("gcPercent(%d, %q) = %d, want %d", tc.configured, tc.env, got, tc.want)
		}
	}
}
