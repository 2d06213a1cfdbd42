package main

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ferryrelay/ferry/"

// The house rules of DESIGN.md, checked over `go list`: config, auth and metrics import
// nothing of ours; cluster imports auth, metrics and signaling only; relay, signaling and
// alloclog import only auth and metrics of ours (plus
// their own rooms and leaf helpers under internal/) and never each other; inside relay, the
// leaves (wire, policy, sockopt, bucket) import nothing of ours, the data path (alloc) does not know
// the control plane, the control plane does not know the listeners; no relay package imports
// net/http; pion/turn, the TURN client, is no dependency of the relay at all; and check, the
// outside view of `ferry check`, knows nothing of Ferry's insides.
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	const r = "relay/internal/"
	allowed := map[string][]string{
		"config":           {},
		"auth":             {},
		"metrics":          {},
		"internal/mmsg":    {},
		"internal/portmux": {},
		"relay": {"auth", "metrics", r + "alloc", r + "control", r + "listen", r + "policy", r + "sockopt",
			r + "stats", r + "wire"},
		r + "bucket":    {},
		r + "wire":      {},
		r + "policy":    {},
		r + "sockopt":   {},
		r + "stats":     {r + "policy", r + "wire"},
		r + "alloc":     {"internal/mmsg", r + "bucket", r + "policy", r + "sockopt", r + "stats", r + "wire"},
		r + "control":   {"auth", r + "alloc", r + "bucket", r + "policy", r + "stats", r + "wire"},
		r + "listen":    {"internal/mmsg", r + "alloc", r + "control", r + "sockopt", r + "stats", r + "wire"},
		"signaling":     {"auth", "metrics", "signaling/web"},
		"signaling/web": {},
		"alloclog":      {"auth", "metrics"},
		"check":         {},
	}
	seen := map[string]bool{}
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		ok, ruled := allowed[name]
		if !ruled {
			continue
		}
		seen[name] = true
		isRelay := name == "relay" || strings.HasPrefix(name, "relay/")
		for _, imp := range p.Imports {
			if isRelay && imp == "net/http" {
				t.Errorf("%s imports net/http", name)
			}
			if dep, ours := strings.CutPrefix(imp, module); ours && !slices.Contains(ok, dep) {
				t.Errorf("%s imports %s, which the layering forbids", name, dep)
			}
		}
		for _, dep := range p.Deps {
			if isRelay && strings.HasPrefix(dep, "github.com/pion/turn") {
				t.Errorf("%s depends on %s: the relay answers TURN itself; pion/turn is only the client", name, dep)
			}
		}
	}
	for name := range allowed {
		if !seen[name] {
			t.Errorf("package %s not found: update the layering rules", name)
		}
	}
}
