package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary YAML to the configuration loader, as an operator's file. Nothing
// panics; a file that is no YAML mapping is named in the error; a rejected one gets one line
// per problem, none twice; an
// accepted one passes Validate and, printed with `ferry config print` (Redacted), loads back
// to the same values (printed the same: a list left empty and one set to [] are alike). Settings that name other files (secrets, keys, certificates) are left
// out: the loader would read whatever path the input names. Seeds: testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, yaml []byte) {
		if bytes.Contains(yaml, []byte("_file")) {
			return
		}
		path := filepath.Join(t.TempDir(), "ferry.yaml")
		if err := os.WriteFile(path, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		file, err := Load(Options{Path: path})
		if err != nil && !strings.Contains(err.Error(), "problem(s):") {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("a YAML error that does not name the file: %v", err)
			}
			return
		}
		if err != nil {
			lines := strings.Split(err.Error(), "\n")
			seen := map[string]bool{}
			for _, l := range lines[1:] {
				if !strings.HasPrefix(l, "  - ") || len(l) < 8 {
					t.Fatalf("not a problem line: %q in\n%v", l, err)
				}
				if seen[l] {
					t.Fatalf("a problem listed twice: %q", l)
				}
				seen[l] = true
			}
			return
		}
		if problems := file.Validate(); len(problems) > 0 {
			t.Fatalf("loaded, yet invalid: %v", problems)
		}
		if len(file.Auth.Secrets)+len(file.Auth.StaticUsers)+len(file.Rooms.SigningKeys) > 0 {
			return // redacted: they would not load back
		}
		printed, err := file.Redacted()
		if err != nil {
			t.Fatalf("config print: %v", err)
		}
		again := filepath.Join(t.TempDir(), "printed.yaml")
		if err := os.WriteFile(again, printed, 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := Load(Options{Path: again})
		if err != nil {
			t.Fatalf("the printed configuration does not load: %v\n%s", err, printed)
		}
		if reprinted, err := back.Redacted(); err != nil || !bytes.Equal(reprinted, printed) {
			t.Fatalf("loaded back differently (%v):\n%s\nthen\n%s", err, printed, reprinted)
		}
	})
}
