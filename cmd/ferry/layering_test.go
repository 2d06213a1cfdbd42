package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ferryrelay/ferry/"

// The house rules of DESIGN.md, checked over `go list`: config, auth and metrics import
// nothing of ours; relay, signaling and alloclog import only auth and metrics of ours (and
// leaf helpers under internal/, which import nothing of ours) and never each other; relay
// never imports net/http.
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	allowed := map[string][]string{
		"config":        {},
		"auth":          {},
		"metrics":       {},
		"relay":         {"auth", "metrics", "internal/mmsg"},
		"internal/mmsg": {},
		"signaling":     {"auth", "metrics", "signaling/web"},
		"signaling/web": {},
		"alloclog":      {"auth", "metrics"},
	}
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		ok, ruled := allowed[name]
		if !ruled {
			continue
		}
		seen++
		for _, imp := range p.Imports {
			if name == "relay" && imp == "net/http" {
				t.Errorf("relay imports net/http")
			}
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if !contains(ok, dep) {
				t.Errorf("%s imports %s, which the layering forbids", name, dep)
			}
		}
	}
	if seen < 4 {
		t.Fatalf("checked only %d packages", seen)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
