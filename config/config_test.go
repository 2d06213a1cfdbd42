package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
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
	p := write(t, "turn:\n  realm: clinic\n  tcp_listen: []\nrelay:\n  allowed_peers: [10.1.0.0/16]\n")
	t.Setenv("FERRY_RELAY_PORT_MIN", "50000")
	t.Setenv("FERRY_AUTH_SECRETS", "first-secret-0123456789,second-secret-0123456789")
	t.Setenv("FERRY_TURN_UDP_LISTEN", "")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--log-level", "debug", "--tcp-listen", "127.0.0.1:3479", "--allowed-peer", "192.0.2.5", "--relay-ip", "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	f, err := Load(Options{Path: p, Flags: fs, Environ: os.Environ()})
	if err != nil {
		t.Fatal(err)
	}
	if f.TURN.Realm != "clinic" || len(f.TURN.TCPListen) != 1 {
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
	if !slices.Equal(f.Relay.AllowedPeers, []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32")}) ||
		f.Relay.BindIP.Addr != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("address flags (over the file's allowed_peers): %v %v", f.Relay.AllowedPeers, f.Relay.BindIP)
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
  nonce_lifetime: 5s
relay:
  port_min: 70000
  max_lifetime: 2m
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
		"turn.nonce_lifetime: must be 1m to 24h, got 5s",
		"relay.max_lifetime: must be 10m (the default lifetime) to 24h, got 2m0s",
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
	for in, want := range map[string]Size{`""`: 0, "0": 0, "512MiB": 512 * MiB, "2GiB": 2 * GiB, "67108864": 64 * MiB} {
		f, err := Load(Options{Path: write(t, "runtime:\n  memory_limit: "+in+"\n")})
		if err != nil || f.Runtime.MemoryLimit != want {
			t.Errorf("%s: %d %v, want %d", in, f.Runtime.MemoryLimit, err, want)
		}
	}
	// A bare small number is bytes, surely not what was meant.
	for in, want := range map[string]string{
		"512":   "runtime.memory_limit: 512 is less than 64MiB (a number without a unit is bytes: did you mean 512MiB?)",
		"64KiB": "runtime.memory_limit: 64KiB is less than 64MiB",
		"lots":  `runtime.memory_limit: "lots" is not a size; write whole bytes or whole KiB, MiB or GiB, e.g. 4MiB, 512KiB or 262144`,
	} {
		_, err := Load(Options{Path: write(t, "runtime:\n  memory_limit: "+in+"\n")})
		if got := problemLines(t, err); len(got) != 1 || got[0] != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	_, err := Load(Options{Path: write(t, "runtime:\n  gogc: -5\n")})
	if got := problemLines(t, err); len(got) != 1 || got[0] != "runtime.gogc: must be positive (or 0 for the default), got -5" {
		t.Fatalf("bad runtime.gogc: %q", got)
	}
}

// Sizes are read once into bytes, and bounded.
func TestSocketSettings(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.TURN.SocketBuffer != 4*MiB || f.Relay.SocketBuffer != 1*MiB {
		t.Errorf("default socket buffers: turn %d, relay %d", f.TURN.SocketBuffer, f.Relay.SocketBuffer)
	}
	// A bare 0 in YAML (an integer) means the kernel default.
	f, err = Load(Options{Path: write(t, "turn:\n  socket_buffer: 0\n  udp_sockets: 2\nrelay:\n  socket_buffer: 256KiB\n")})
	if err != nil {
		t.Fatal(err)
	}
	if f.TURN.SocketBuffer != 0 || f.TURN.UDPSockets != 2 || f.Relay.SocketBuffer != 256*KiB {
		t.Errorf("turn: buffer %d, sockets %d; relay: buffer %d", f.TURN.SocketBuffer, f.TURN.UDPSockets, f.Relay.SocketBuffer)
	}
	_, err = Load(Options{Path: write(t, "turn:\n  socket_buffer: huge\n  udp_sockets: 65\nrelay:\n  socket_buffer: 2GiB\n")})
	want := []string{
		`turn.socket_buffer: "huge" is not a size; write whole bytes or whole KiB, MiB or GiB, e.g. 4MiB, 512KiB or 262144`,
		"turn.udp_sockets: 65 is not 0 (one per CPU) to 64",
		"relay.socket_buffer: 2GiB is more than 1GiB",
	}
	if got := problemLines(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Addresses and CIDR lists reach main parsed: a bare address is one host, an IPv4-mapped
// address is unmapped, and every bad entry is reported with its key and the entry.
func TestAddressesParsedOnce(t *testing.T) {
	f, err := Load(Options{Path: write(t, `
relay:
  bind_ip: "::ffff:192.0.2.10"
  advertised_ip: 198.51.100.7
  bind_ipv6: 2001:db8::10
  allowed_peers: [10.1.0.0/16, 192.0.2.99, "2001:db8:1::/48"]
  denied_peers: [10.1.2.0/24]
http:
  trusted_proxies: [127.0.0.1, 10.0.0.0/8]
`)})
	if err != nil {
		t.Fatal(err)
	}
	r := f.Relay
	if r.BindIP != (AutoAddr{Addr: netip.MustParseAddr("192.0.2.10")}) || r.AdvertisedIP != netip.MustParseAddr("198.51.100.7") ||
		r.BindIPv6 != netip.MustParseAddr("2001:db8::10") || r.AdvertisedIPv6.IsValid() {
		t.Errorf("relay addresses: %+v", r)
	}
	prefixes := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	if !slices.Equal(r.AllowedPeers, prefixes("10.1.0.0/16", "192.0.2.99/32", "2001:db8:1::/48")) ||
		!slices.Equal(r.DeniedPeers, prefixes("10.1.2.0/24")) ||
		!slices.Equal(f.HTTP.TrustedProxies, prefixes("127.0.0.1/32", "10.0.0.0/8")) {
		t.Errorf("CIDR lists: %v %v %v", r.AllowedPeers, r.DeniedPeers, f.HTTP.TrustedProxies)
	}
	if d, _ := Load(Options{}); d.Relay.BindIP != (AutoAddr{Auto: true}) {
		t.Errorf("default bind_ip: %+v", d.Relay.BindIP)
	}

	_, err = Load(Options{Path: write(t, `
relay:
  bind_ip: 2001:db8::1
  advertised_ip: not-an-ip
  allowed_peers: [10.0.0.0/8, bogus, 10.0.0.0/33]
  denied_peers: ["::1/129"]
http:
  trusted_proxies: [proxy.example]
`), Environ: []string{"FERRY_RELAY_DENIED_PEERS=10.0.0.0/8,nope"}})
	want := []string{
		`relay.advertised_ip: "not-an-ip" is not an IP address`,
		`relay.allowed_peers: "bogus" is not a CIDR (like 10.1.0.0/16) or an IP address`,
		`relay.allowed_peers: "10.0.0.0/33" is not a CIDR (like 10.1.0.0/16) or an IP address`,
		`FERRY_RELAY_DENIED_PEERS (relay.denied_peers): "nope" is not a CIDR (like 10.1.0.0/16) or an IP address`,
		`http.trusted_proxies: "proxy.example" is not a CIDR (like 10.1.0.0/16) or an IP address`,
		"relay.bind_ip: 2001:db8::1 is not an IPv4 address",
	}
	if got := problemLines(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// `ferry config print` shows values as they are written, and what it prints loads back.
func TestPrintedConfigLoadsBack(t *testing.T) {
	f, err := Load(Options{Path: write(t, `
turn:
  socket_buffer: 3MiB
relay:
  bind_ip: 192.0.2.10
  allowed_peers: [10.1.0.0/16, 192.0.2.99]
  socket_buffer: 1536KiB
runtime:
  memory_limit: 1GiB
`)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"socket_buffer: 3MiB", "bind_ip: 192.0.2.10", "- 192.0.2.99/32", "socket_buffer: 1536KiB", "memory_limit: 1GiB", "max_ttl: 24h0m0s"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
	back, err := Load(Options{Path: write(t, string(out))})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, f) {
		t.Fatalf("loaded back differently:\n%+v\n%+v", back, f)
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

// The drain and readiness settings: defaults, and bounds reported with the value given.
func TestDrainAndReadinessSettings(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Server.DrainTimeout != 30*time.Minute || f.Server.ReadinessMaxUsage != 0.9 || f.Server.PIDFile != "" {
		t.Fatalf("defaults: %+v", f.Server)
	}
	_, err = Load(Options{Path: write(t, "server:\n  drain_timeout: 25h\n  readiness_max_usage: 1.5\n")})
	want := []string{
		"server.drain_timeout: must be 0 (no drain) to 24h, got 25h0m0s",
		"server.readiness_max_usage: must be a share from 0 (off) to 1, e.g. 0.9, got 1.5",
	}
	if got := problemLines(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	f, err = Load(Options{Environ: []string{"FERRY_SERVER_DRAIN_TIMEOUT=0s", "FERRY_SERVER_READINESS_MAX_USAGE=0"}})
	if err != nil || f.Server.DrainTimeout != 0 || f.Server.ReadinessMaxUsage != 0 {
		t.Fatalf("0 turns both off: %v %+v", err, f.Server)
	}
}
