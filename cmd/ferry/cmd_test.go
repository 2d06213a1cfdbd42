package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
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
	var conf signaling.RTCConfiguration
	if err := json.Unmarshal([]byte(out), &conf); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	want := []signaling.ICEServer{{URLs: []string{"stun:turn.clinic.example:3478"}},
		{URLs: []string{"turn:turn.clinic.example:3478?transport=udp", "turn:turn.clinic.example:3478?transport=tcp"}}}
	if len(conf.ICEServers) != 2 || !slices.Equal(conf.ICEServers[0].URLs, want[0].URLs) || conf.ICEServers[0].Username != "" ||
		!slices.Equal(conf.ICEServers[1].URLs, want[1].URLs) || conf.TTL != 12*3600 || conf.ExpiresAt == "" {
		t.Fatalf("--json: %s", out)
	}
	if id, err := a.Lookup(conf.ICEServers[1].Username); err != nil || id.UserID != "u1" || id.Passwords[0] != conf.ICEServers[1].Credential {
		t.Fatalf("--json credential does not verify: %v", err)
	}

	if _, _, err := runCmd(t, "credentials", "--data-dir", dir, "--user", "u", "--ttl", "48h"); err == nil {
		t.Fatal("a TTL above auth.max_ttl must be refused")
	}
	if _, _, err := runCmd(t, "credentials", "--data-dir", dir); err == nil {
		t.Fatal("--user is required")
	}
}

// `ferry credentials --json` prints what GET /v1/ice-servers answers for the same
// configuration: the same JSON fields, the same servers and URLs (stun: included).
func TestCredentialsJSONMatchesICEServersEndpoint(t *testing.T) {
	dir := t.TempDir()
	key, sum, err := signaling.NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
server: {data_dir: %q, public_host: turn.clinic.example}
turn: {udp_listen: ["0.0.0.0:3478"], tcp_listen: ["0.0.0.0:3478"], tls_listen: ["0.0.0.0:443"], tls_cert_file: %q, tls_key_file: %q}
auth: {secrets: [a-very-secret-secret-value]}
api: {keys: [{name: app, sha256: %x}]}
`, dir, testCert(t, dir), filepath.Join(dir, "key.pem"), sum)), 0o600)
	out, _, err := runCmd(t, "credentials", "--config", cfg, "--user", "u1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(config.Options{Path: cfg})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAuthenticator(f, f.Auth.Secrets)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHTTPServer(f, a, prometheus.NewRegistry(), configuredURLs(f), nil, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/v1/ice-servers?user=u1", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	h.Handler.ServeHTTP(rec, req)
	// Only the credential differs (the two were minted at different instants).
	shape := func(doc []byte) string {
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatalf("%v: %s", err, doc)
		}
		for _, s := range m["iceServers"].([]any) {
			e := s.(map[string]any)
			for _, k := range []string{"username", "credential"} {
				if _, ok := e[k]; ok {
					e[k] = "<set>"
				}
			}
		}
		m["expiresAt"] = "<set>"
		b, _ := json.Marshal(m)
		return string(b)
	}
	if got, want := shape([]byte(out)), shape(rec.Body.Bytes()); got != want {
		t.Fatalf("ferry credentials --json:\n%s\n/v1/ice-servers:\n%s", got, want)
	}
	if !strings.Contains(out, `"stun:turn.clinic.example:3478"`) || !strings.Contains(out, `"turns:turn.clinic.example:443?transport=tcp"`) {
		t.Fatalf("--json lacks the stun: or turns: URL:\n%s", out)
	}
}

// testCert writes a self-signed certificate for turn.clinic.example to dir/cert.pem and its
// key to dir/key.pem, and returns the certificate's path.
func testCert(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"turn.clinic.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath := filepath.Join(dir, "cert.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certPath
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
