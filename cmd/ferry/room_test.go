package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// `ferry room create` prints a host and a guest link whose tokens verify with the key that
// `ferry serve` would use from the same data directory (generated on first use, 0600).
func TestRoomCreateCommand(t *testing.T) {
	dir := t.TempDir()
	out, _, err := runCmd(t, "room", "create", "--data-dir", dir, "--ttl", "45m", "--host-name", "Dr. Weiß")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, roomKeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key file: %v %v", fi, err)
	}
	key, _ := os.ReadFile(filepath.Join(dir, roomKeyFileName))
	tokens, err := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: []string{strings.TrimSpace(string(key))}})
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		for _, role := range []string{"host", "guest"} {
			if v, ok := strings.CutPrefix(line, role+" link:"); ok {
				links[role] = strings.TrimSpace(v)
			}
		}
	}
	var room string
	for role, link := range links {
		base, tok, ok := strings.Cut(link, "#t=")
		if !ok || !strings.HasPrefix(base, "http://") || !strings.Contains(base, ":8080/r/") {
			t.Fatalf("%s link %q", role, link)
		}
		c, err := tokens.Verify(tok)
		if err != nil || c.Role != role || !strings.HasSuffix(base, "/r/"+c.Room) {
			t.Fatalf("%s token: %+v %v", role, c, err)
		}
		if d := time.Until(c.Expires); d < 44*time.Minute || d > 46*time.Minute {
			t.Fatalf("--ttl 45m gave exp in %s", d)
		}
		room = c.Room
	}
	if len(links) != 2 || !auth.ValidRoomID(room) {
		t.Fatalf("links: %v\n%s", links, out)
	}
	out, _, err = runCmd(t, "room", "create", "--data-dir", dir, "--json", "--valid-from", "2099-01-01T00:00:00Z")
	if err == nil || !strings.Contains(err.Error(), "ahead") {
		t.Fatalf("a room a century ahead: %v %s", err, out)
	}
	t.Setenv("FERRY_HTTP_PUBLIC_URL", "https://consult.clinic.example/")
	out, _, err = runCmd(t, "room", "create", "--data-dir", dir, "--json", "--max-guests", "2")
	if err != nil {
		t.Fatal(err)
	}
	var js struct {
		Room  string            `json:"room"`
		Links map[string]string `json:"links"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || !strings.HasPrefix(js.Links["guest"], "https://consult.clinic.example/r/"+js.Room+"#t=") {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--ttl", "48h"}, {"--valid-until", "yesterday"}, {"--ttl", "1h", "--valid-until", "2099-01-01T00:00:00Z"}} {
		if _, _, err := runCmd(t, append([]string{"room", "create", "--data-dir", dir}, bad...)...); err == nil {
			t.Errorf("%v must be refused", bad)
		}
	}
}
