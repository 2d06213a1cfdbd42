package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoomsDefaultsAndOverlay(t *testing.T) {
	f, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := f.Rooms
	if !r.Enabled || !r.WaitingRoom || r.ReconnectGrace != 30*time.Second || r.Limits.Participants != 2 ||
		r.Limits.Waiting != 4 || r.Limits.MessageBytes != 65536 || f.HTTP.PublicURL != "" {
		t.Fatalf("rooms defaults: %+v", r)
	}
	keys := filepath.Join(t.TempDir(), "room-keys")
	if err := os.WriteFile(keys, []byte("# new first\nnew-room-key-0123456789abcdefghijklmn\nold-room-key-0123456789abcdefghijklmn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !r.Page.Enabled || r.Page.MaxFileSize != 100*MiB {
		t.Fatalf("page defaults: %+v", r.Page)
	}
	t.Setenv("FERRY_ROOMS_PAGE_MAX_FILE_SIZE", "2GiB")
	t.Setenv("FERRY_ROOMS_LIMITS_WAITING", "9")
	t.Setenv("FERRY_ROOMS_WAITING_ROOM", "false")
	t.Setenv("FERRY_ROOMS_SIGNING_KEYS_FILE", keys)
	t.Setenv("FERRY_HTTP_PUBLIC_URL", "https://consult.clinic.example")
	f, err = Load(Options{Environ: os.Environ()})
	if err != nil {
		t.Fatal(err)
	}
	if f.Rooms.Limits.Waiting != 9 || f.Rooms.WaitingRoom || len(f.Rooms.SigningKeys) != 2 ||
		f.HTTP.PublicURL != "https://consult.clinic.example" || f.Rooms.Page.MaxFileSize != 2*GiB {
		t.Fatalf("overlay lost: %+v %q", f.Rooms, f.HTTP.PublicURL)
	}
	out, _ := f.Redacted()
	if strings.Contains(string(out), "room-key-0123") {
		t.Fatal("config print shows a room signing key")
	}
}

func TestRoomsEveryProblemListed(t *testing.T) {
	p := write(t, `
http:
  public_url: "consult.clinic.example/?x=1"
rooms:
  signing_keys: ["short"]
  reconnect_grace: 0s
  default_ttl: 48h
  max_ttl: 24h
  credential_ttl: 30h
  credential_refresh: 40h
  ping_interval: 2m
  limits:
    participants: 1
    waiting: 0
    message_bytes: 100
    message_rate: 0
    colour: red
  page:
    max_file_size: 5GiB
`)
	_, err := Load(Options{Path: p})
	if err == nil {
		t.Fatal("a broken rooms section loaded")
	}
	for _, want := range []string{"http.public_url", "rooms.signing_keys: key 1", "rooms.reconnect_grace",
		"rooms.default_ttl", "rooms.credential_ttl", "rooms.credential_refresh", "rooms.ping_interval",
		"rooms.limits.participants", "rooms.limits.waiting", "rooms.limits.message_bytes",
		"rooms.limits.message_rate", "unknown key rooms.limits.colour", "rooms.page.max_file_size"} {
		if strings.Count(err.Error(), want) < 1 {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "rooms.default_ttl"); n != 1 {
		t.Errorf("rooms.default_ttl listed %d times", n)
	}
}
