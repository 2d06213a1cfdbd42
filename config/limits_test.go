package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The quotas, caps and paces default to what README's "Running a public relay safely"
// promises, bit rates read in every spelling an operator might use, and each mistake is
// reported once, with its key.
func TestLimits(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := f.Relay
	if r.MaxAllocationsUser != 8 || r.MaxAllocations != 0 || r.MaxPermissions != 64 || r.MaxChannels != 64 ||
		r.BandwidthAllocation != 0 || r.BandwidthUser != 0 || r.BandwidthTotal != 0 || r.BandwidthBurst != 200*time.Millisecond ||
		r.UnauthRate != 100 || r.UnauthBurst != 1000 {
		t.Fatalf("defaults: %+v", r)
	}
	for in, want := range map[string]Bitrate{"0": 0, `""`: 0, "4Mbit": 4 * Mbit, "2.5Mbit/s": 2500 * Kbit, "500kbit": 500 * Kbit,
		"1Gbit": Gbit, "4Mbps": 4 * Mbit, "3000000": 3 * Mbit, "64000bit": 64 * Kbit, "1.5 Mbit": 1500 * Kbit} {
		f, err := Load(Options{Path: write(t, "relay:\n  bandwidth_per_allocation: "+in+"\n")})
		if err != nil || f.Relay.BandwidthAllocation != want {
			t.Errorf("%s: %v %v, want %v", in, f.Relay.BandwidthAllocation, err, want)
		}
	}
	_, err = Load(Options{Path: write(t, `
relay:
  max_allocations_per_user: -1
  max_channels: 0
  bandwidth_per_allocation: 4MB
  bandwidth_per_user: 10kbit
  bandwidth_total: lots
  bandwidth_burst: 1ms
  unauth_rate: 0
turn:
  realm: clinic.example.org
`)})
	want := []string{
		`relay.bandwidth_per_allocation: "4MB" is not a bit rate; write bits per second with a unit, e.g. 4Mbit, 2.5Mbit or 500kbit (units: bit, kbit, Mbit, Gbit)`,
		`relay.bandwidth_total: "lots" is not a bit rate; write bits per second with a unit, e.g. 4Mbit, 2.5Mbit or 500kbit (units: bit, kbit, Mbit, Gbit)`,
		`turn.realm: "clinic.example.org" is 18 bytes, at most 8: a longer realm makes the 401 challenge to a browser's first Allocate (28 bytes) more than twice its size, which Ferry does not send over UDP; REST credentials do not depend on the realm`,
		"relay.max_allocations_per_user: cannot be negative (0 is no cap), got -1",
		"relay.max_channels: must be 1-4096, got 0",
		"relay.bandwidth_per_user: 10kbit is less than 64kbit, too little for audio (0 is no cap)",
		"relay.bandwidth_burst: must be 10ms to 10s, got 1ms",
		"relay.unauth_rate: 0 would answer no client; give answers per second, or a negative rate for no limit",
	}
	if got := problemLines(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Environment variables take rates too; config print writes them back readably.
	f, err = Load(Options{Environ: append(os.Environ(), "FERRY_RELAY_BANDWIDTH_TOTAL=800Mbit")})
	if err != nil || f.Relay.BandwidthTotal != 800*Mbit {
		t.Fatalf("env: %v %v", f.Relay.BandwidthTotal, err)
	}
	out, err := f.Redacted()
	if err != nil || !strings.Contains(string(out), "bandwidth_total: 800Mbit") {
		t.Fatalf("config print: %v\n%s", err, out)
	}
}
