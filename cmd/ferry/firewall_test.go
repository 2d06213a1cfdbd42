package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// `ferry firewall` lists what a clinic's firewall must let out for the configuration: the
// shared TCP 443 (TURN over TLS and TCP, HTTPS) as the one required rule, UDP 3478 as
// recommended, the relay range to the advertised address as optional; the server's inbound
// rules as a table and as nftables rules; and warns about what stands in a clinic's way.
func TestFirewallCommand(t *testing.T) {
	dir := t.TempDir()
	cert := testCert(t, dir)
	args := []string{"firewall", "--data-dir", dir, "--public-host", "turn.clinic.example", "--relay-ip", "10.0.0.5",
		"--advertised-ip", "203.0.113.10", "--udp-listen", "0.0.0.0:3478", "--tcp-listen", "0.0.0.0:3478,0.0.0.0:443",
		"--tls-listen", "0.0.0.0:443", "--http-listen", "0.0.0.0:443"}
	env := []string{"FERRY_TURN_TLS_CERT_FILE=" + cert, "FERRY_TURN_TLS_KEY_FILE=" + filepath.Join(dir, "key.pem")}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	out, _, err := runCmd(t, append(args, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var p fwPlan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dest := []string{"203.0.113.10", "turn.clinic.example"}
	want := []fwRule{
		{Protocol: "tcp", Destinations: dest, Ports: "443", Need: needRequired, Purpose: "TURN over TLS (turns:), TURN over TCP, the consultation page and API (HTTPS)"},
		{Protocol: "tcp", Destinations: dest, Ports: "3478", Need: needOptional, Purpose: "TURN over TCP"},
		{Protocol: "udp", Destinations: dest, Ports: "3478", Need: needRecommended, Purpose: "TURN and STUN over UDP: the best audio and video"},
		{Protocol: "udp", Destinations: []string{"203.0.113.10"}, Ports: "49152-65535", Need: needOptional,
			Purpose: "relayed transport addresses: lets a browser in the clinic send straight to the other side's relay"},
	}
	if len(p.Clinic) != len(want) || len(p.Warnings) != 0 || !slices.Equal(p.Addresses, []string{"203.0.113.10"}) {
		t.Fatalf("plan %+v", p)
	}
	for i, r := range want {
		got := p.Clinic[i]
		if got.Protocol != r.Protocol || got.Ports != r.Ports || got.Need != r.Need || got.Purpose != r.Purpose || !slices.Equal(got.Destinations, r.Destinations) {
			t.Errorf("clinic rule %d: %+v, want %+v", i, got, r)
		}
	}
	text, _, err := runCmd(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"nft add rule inet filter input udp dport { 3478, 49152-65535 } accept",
		"nft add rule inet filter input tcp dport { 443, 3478 } accept",
		"tcp       203.0.113.10, turn.clinic.example  443          required",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("text lacks %q:\n%s", line, text)
		}
	}

	// The embedded defaults: no 443, the API on 8080 over plain HTTP, a relay address on a
	// private network without an advertised one.
	out, _, err = runCmd(t, "firewall", "--json", "--data-dir", dir, "--relay-ip", "10.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	p = fwPlan{}
	_ = json.Unmarshal([]byte(out), &p)
	warn := strings.Join(p.Warnings, "\n")
	if !strings.Contains(warn, "no TURN on TCP 443") || !strings.Contains(warn, "relay.bind_ip is in a private range") ||
		p.Clinic[0].Ports != "3478" || p.Clinic[0].Need != needRequired || p.Clinic[len(p.Clinic)-1].Purpose != "the consultation page and API (HTTP)" ||
		p.Server[1].Purpose != "TURN over TCP, HTTP" {
		t.Fatalf("defaults: %s", out)
	}
}
