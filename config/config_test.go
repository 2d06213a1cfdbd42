package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEmbeddedDefaultIsValid(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.TURN.Realm != "ferry" || f.TURN.UDPListen[0] != "0.0.0.0:3478" || f.TURN.TCPListen[0] != "0.0.0.0:3478" {
		t.Fatalf("defaults: %+v", f.TURN)
	}
	if f.Relay.PortMin != 49152 || f.Relay.PortMax != 65535 || f.Relay.MaxAllocationAge != 12*time.Hour {
		t.Fatalf("relay defaults: %+v", f.Relay)
	}
}

func TestFileEnvAndFlagsOverride(t *testing.T) {
	p := write(t, "turn:\n  realm: clinic.example\n  tcp_listen: []\nrelay:\n  allowed_peers: [10.1.0.0/16]\n")
	t.Setenv("FERRY_RELAY_PORT_MIN", "50000")
	t.Setenv("FERRY_AUTH_SECRETS", "first-secret-0123456789,second-secret-0123456789")
	t.Setenv("FERRY_TURN_UDP_LISTEN", "")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--log-level", "debug", "--tcp-listen", "127.0.0.1:3479"}); err != nil {
		t.Fatal(err)
	}
	f, err := Load(Options{Path: p, Flags: fs, Environ: os.Environ()})
	if err != nil {
		t.Fatal(err)
	}
	if f.TURN.Realm != "clinic.example" || f.Relay.AllowedPeers[0] != "10.1.0.0/16" {
		t.Errorf("file values lost: %+v", f)
	}
	if f.Relay.PortMin != 50000 || len(f.Auth.Secrets) != 2 || f.Auth.Secrets[1] != "second-secret-0123456789" {
		t.Errorf("env values lost: %+v %d", f.Relay.PortMin, len(f.Auth.Secrets))
	}
	if len(f.TURN.UDPListen) != 0 {
		t.Errorf("an empty env var must empty the list: %q", f.TURN.UDPListen)
	}
	if f.Log.Level != "debug" || len(f.TURN.TCPListen) != 1 || f.TURN.TCPListen[0] != "127.0.0.1:3479" {
		t.Errorf("flags lost: %+v %+v", f.Log, f.TURN.TCPListen)
	}
}

// Every mistake is reported at once, so an operator fixes the file in one go.
func TestEveryProblemListedAtOnce(t *testing.T) {
	p := write(t, `
turn:
  realm: ""
  udp_listen: ["not-an-address"]
  tls_listen: [":5349"]
  colour: blue
relay:
  port_min: 70000
  allowed_peer: 10.0.0.0/8
  allowed_peers: ["10.0.0.0/33", "bogus"]
  denied_peers: ["::1/129"]
  max_allocation_age: forever
auth:
  max_ttl: 0s
  clock_skew: 12
  secrets: ["short"]
  static_users: [{name: "a:b", password: x}]
extra: 1
`)
	t.Setenv("FERRY_TURN_REALMM", "typo")
	_, err := Load(Options{Path: p, Environ: os.Environ()})
	if err == nil {
		t.Fatal("a broken config loaded")
	}
	for _, want := range []string{
		"FERRY_TURN_REALMM is not a configuration key",
		"unknown key turn.colour",
		"unknown top-level key extra",
		"unknown key relay.allowed_peer (did you mean relay.allowed_peers?)",
		"relay.max_allocation_age",
		"auth.clock_skew: 12: missing unit; write a number and a unit",
		"turn.realm",
		`turn.udp_listen: "not-an-address"`,
		"turn.tls_listen: needs turn.tls_cert_file",
		"port range 70000-65535",
		`"10.0.0.0/33" is not a CIDR`,
		`"bogus" is not a CIDR`,
		`relay.denied_peers: "::1/129"`,
		"relay.max_allocation_age",
		"auth.max_ttl",
		"auth.secrets[0]: shorter than 16",
		"auth.static_users[0]: a static name cannot contain ':'",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing problem %q in:\n%v", want, err)
		}
	}
}

func TestSecretsFileAndRedaction(t *testing.T) {
	dir := t.TempDir()
	sf := filepath.Join(dir, "secrets")
	if err := os.WriteFile(sf, []byte("# current first\nnew-secret-0123456789\n\nold-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := write(t, "auth:\n  secrets_file: "+sf+"\n  static_users: [{name: legacy, password: hunter2-password}]\n")
	f, err := Load(Options{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Auth.Secrets) != 2 || f.Auth.Secrets[0] != "new-secret-0123456789" {
		t.Fatalf("secrets from file: %d", len(f.Auth.Secrets))
	}
	out, err := f.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"new-secret-0123456789", "old-secret-0123456789", "hunter2-password"} {
		if strings.Contains(string(out), secret) {
			t.Fatalf("config print shows a secret:\n%s", out)
		}
	}
	if !strings.Contains(string(out), "legacy") {
		t.Fatal("redaction removed the user name too")
	}

	both := write(t, "auth:\n  secrets: [abcdefghijklmnopq]\n  secrets_file: "+sf+"\n")
	if _, err := Load(Options{Path: both}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("secrets and secrets_file together: %v", err)
	}
	missing := write(t, "auth:\n  secrets_file: /nonexistent/ferry-secrets\n")
	if _, err := Load(Options{Path: missing}); err == nil || !strings.Contains(err.Error(), "auth.secrets_file") {
		t.Fatalf("missing secrets file: %v", err)
	}
}

func TestMissingConfigFile(t *testing.T) {
	if _, err := Load(Options{Path: "/nonexistent/ferry.yaml"}); err == nil {
		t.Fatal("a missing --config file must fail")
	}
}

func TestRetentionOver48hNeedsOptIn(t *testing.T) {
	p := write(t, "alloclog:\n  retention: 72h\n")
	if _, err := Load(Options{Path: p}); err == nil || !strings.Contains(err.Error(), "allow_retention_over_48h") {
		t.Fatalf("72h without opt-in: %v", err)
	}
	p = write(t, "alloclog:\n  retention: 72h\n  allow_retention_over_48h: true\n")
	if _, err := Load(Options{Path: p}); err != nil {
		t.Fatalf("72h with opt-in: %v", err)
	}
	p = write(t, "alloclog:\n  retention: 24h\n  purge_interval: 30s\n")
	if f, err := Load(Options{Path: p}); err != nil || f.AllocLog.Retention != 24*time.Hour {
		t.Fatalf("shorter retention: %v", err)
	}
}

// Two listeners on one address are a mistake, except HTTPS sharing a TURN TLS port (443).
func TestTLSPairAndDuplicateListeners(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o600)
	p := write(t, `
turn:
  udp_listen: ["0.0.0.0:3478", "0.0.0.0:3478"]
  tls_listen: ["0.0.0.0:5349"]
  tls_cert_file: `+junk+`
  tls_key_file: `+junk+`
http:
  listen: "0.0.0.0:3478"
`)
	_, err := Load(Options{Path: p})
	for _, want := range []string{
		`turn.udp_listen: "0.0.0.0:3478" is also in turn.udp_listen`,
		`http.listen: "0.0.0.0:3478" is also in turn.tcp_listen`,
		"turn.tls_cert_file: does not load with turn.tls_key_file",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestRuntimeSettings(t *testing.T) {
	for in, want := range map[string]int64{"": -1, "0": -1, "512MiB": 512 << 20, "2GiB": 2 << 30, "67108864": 64 << 20} {
		got, err := RuntimeSection{MemoryLimit: in}.MemoryLimitBytes()
		if err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	// A bare small number is bytes, surely not what was meant.
	for in, want := range map[string]string{"512": "did you mean 512MiB", "64KiB": "less than 64MiB"} {
		if _, err := (RuntimeSection{MemoryLimit: in}).MemoryLimitBytes(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	p := write(t, "runtime:\n  gogc: -5\n  memory_limit: lots\n")
	_, err := Load(Options{Path: p})
	if err == nil || !strings.Contains(err.Error(), "runtime.gogc") || !strings.Contains(err.Error(), "runtime.memory_limit") {
		t.Fatalf("bad runtime settings: %v", err)
	}
}

func TestSocketSettings(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.TURN.SocketBufferBytes(); err != nil || n != 4<<20 {
		t.Errorf("default turn.socket_buffer: %d %v", n, err)
	}
	if n, err := f.Relay.SocketBufferBytes(); err != nil || n != 1<<20 {
		t.Errorf("default relay.socket_buffer: %d %v", n, err)
	}
	// A bare 0 in YAML (an integer) means the kernel default.
	f, err = Load(Options{Path: write(t, "turn:\n  socket_buffer: 0\n  udp_sockets: 2\nrelay:\n  socket_buffer: 256KiB\n")})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := f.TURN.SocketBufferBytes(); n != 0 || f.TURN.UDPSockets != 2 {
		t.Errorf("turn: buffer %d, sockets %d", n, f.TURN.UDPSockets)
	}
	if n, _ := f.Relay.SocketBufferBytes(); n != 256<<10 {
		t.Errorf("relay.socket_buffer: %d", n)
	}
	_, err = Load(Options{Path: write(t, "turn:\n  socket_buffer: huge\n  udp_sockets: 65\nrelay:\n  socket_buffer: 2GiB\n")})
	for _, want := range []string{"turn.socket_buffer", "turn.udp_sockets", "relay.socket_buffer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

// Values weak typing would bend are refused, each named: fractions and booleans where a
// number belongs, out-of-range numbers, and an empty environment variable for a scalar.
func TestScalarsAreStrict(t *testing.T) {
	p := write(t, "turn:\n  udp_sockets: 2.7\n  socket_buffer: true\nrelay:\n  socket_buffer: 4.0\n  max_permissions: 99999999999999999999\nruntime:\n  gogc: true\n")
	_, err := Load(Options{Path: p, Environ: []string{"FERRY_RELAY_UDP_GSO=", "FERRY_AUTH_SECRETS="}})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"turn.udp_sockets", "2.7", "turn.socket_buffer", "relay.socket_buffer",
		"relay.max_permissions", "runtime.gogc", "FERRY_RELAY_UDP_GSO (relay.udp_gso): empty"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "FERRY_AUTH_SECRETS") {
		t.Errorf("an empty list variable is allowed: %v", err)
	}
	// Whole numbers as text (environment variables) still work.
	t.Setenv("FERRY_TURN_UDP_SOCKETS", "3")
	t.Setenv("FERRY_RUNTIME_GOGC", "80")
	f, err := Load(Options{Environ: os.Environ()})
	if err != nil || f.TURN.UDPSockets != 3 || f.Runtime.GOGC != 80 {
		t.Fatalf("env numbers: %+v %v", f.Runtime, err)
	}
}

// problemLines returns the problems of a Load error, one per line, without the list marks.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("the configuration loaded")
	}
	var out []string
	for _, line := range strings.Split(err.Error(), "\n")[1:] {
		out = append(out, strings.TrimPrefix(line, "  - "))
	}
	return out
}

// A value that cannot be read is reported once, with the value and what is accepted, and
// not again as the zero value it left behind ("must be positive, got 0s").
func TestUnreadableValueReportedOnce(t *testing.T) {
	p := write(t, "auth:\n  default_ttl: 12x\n  max_ttl: forever\nrelay:\n  port_min: lots\n  max_allocation_age: 1\n")
	_, err := Load(Options{Path: p})
	got := problemLines(t, err)
	want := []string{
		`relay.port_min: "lots" is not a whole number`,
		`relay.max_allocation_age: 1: missing unit; write a number and a unit, e.g. 30s, 15m or 12h (units: h, m, s, ms, us, ns)`,
		`auth.max_ttl: "forever": not a duration; write a number and a unit, e.g. 30s, 15m or 12h (units: h, m, s, ms, us, ns)`,
		`auth.default_ttl: "12x": unknown unit "x"; write a number and a unit, e.g. 30s, 15m or 12h (units: h, m, s, ms, us, ns)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A problem with a value from an environment variable or a flag names the variable or the
// flag, and the key.
func TestProblemsNameTheirSource(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--relay-ip", "bogus"}); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Options{Flags: fs, Environ: []string{
		"FERRY_RELAY_UDP_GSO=maybe", "FERRY_RELAY_PORT_MIN=80", "FERRY_AUTH_DEFAULT_TTL=12x",
		"FERRY_TURN_RELAM=clinic", "FERRY_LOG_LEVEL=loud", "PATH=/bin"}})
	want := []string{
		"environment: FERRY_TURN_RELAM is not a configuration key (did you mean FERRY_TURN_REALM?)",
		`FERRY_RELAY_UDP_GSO (relay.udp_gso): "maybe" is not true or false`,
		`FERRY_AUTH_DEFAULT_TTL (auth.default_ttl): "12x": unknown unit "x"; write a number and a unit, e.g. 30s, 15m or 12h (units: h, m, s, ms, us, ns)`,
		`FERRY_LOG_LEVEL (log.level): "loud" is not debug, info, warn or error`,
		`--relay-ip (relay.bind_ip): "bogus" is not an IP address`,
		"relay: port range 80-65535 must lie within 1024-65535 with port_min <= port_max (relay.port_min from FERRY_RELAY_PORT_MIN)",
	}
	got := problemLines(t, err)
	slices.Sort(got)
	slices.Sort(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The environment is Options.Environ, not whatever the process has.
func TestEnvironmentIsOptionsEnviron(t *testing.T) {
	t.Setenv("FERRY_TURN_REALM", "from-process")
	f, err := Load(Options{Environ: []string{"FERRY_RELAY_PORT_MIN=50000"}})
	if err != nil {
		t.Fatal(err)
	}
	if f.TURN.Realm != "ferry" || f.Relay.PortMin != 50000 {
		t.Fatalf("realm %q, port_min %d", f.TURN.Realm, f.Relay.PortMin)
	}
}
