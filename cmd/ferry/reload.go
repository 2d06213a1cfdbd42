package main

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/signaling"
	"go.yaml.in/yaml/v3"
)

// reloadable are the settings a reload applies to the running server; a change to any
// other setting takes effect at the next start, and the reload says so. Secrets kept in the
// data directory (turn-secret, room-signing-key) are read again too.
var reloadable = []string{
	"log.level",
	"auth.secrets", "auth.secrets_file", "auth.static_users", "auth.max_ttl", "auth.clock_skew",
	"api.keys",
	"rooms.signing_keys", "rooms.signing_keys_file",
	"relay.allowed_peers", "relay.denied_peers",
	"relay.max_permissions", "relay.max_channels", "relay.max_allocations", "relay.max_allocations_per_user",
	"relay.bandwidth_per_allocation", "relay.bandwidth_per_user", "relay.bandwidth_total", "relay.bandwidth_burst",
	"relay.unauth_rate", "relay.unauth_burst",
	"turn.tls_cert_file", "turn.tls_key_file", "http.tls_cert_file", "http.tls_key_file",
	"server.drain_timeout", "server.readiness_max_usage",
	"cluster.admin_token_file",
}

// listenerKeys are the listener addresses: the ports stay open across a reload.
var listenerKeys = []string{"turn.udp_listen", "turn.tcp_listen", "turn.tls_listen", "http.listen", "admin.listen"}

// reloadReport says what a reload changed: the settings it applied, and those that changed
// in the file but wait for a restart (listener addresses among them).
type reloadReport struct{ Applied, Restart []string }

// reload reads the configuration again from where it came from at start (the same file,
// environment and flags) and applies what can change while Ferry runs (reloadable), all or
// nothing: an invalid configuration, a secret file that cannot be read or a certificate
// that does not load keeps the running configuration, logs every problem and counts the
// failure. Allocations and rooms go on either way.
func (s *server) reload() (reloadReport, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	rep, err := s.applyReload()
	s.ops.Reloaded(err == nil, time.Now())
	if err != nil {
		problems := reloadProblems(err)
		s.log.Error("reload failed: the running configuration stays", "problems", len(problems))
		for _, p := range problems {
			s.log.Error("reload: " + p)
		}
	}
	return rep, err
}

// configFile is the absolute path of the file the server reads its configuration from, ""
// when it runs without one.
func (s *server) configFile() string {
	if s.opts.Path == "" {
		return ""
	}
	if abs, err := filepath.Abs(s.opts.Path); err == nil {
		return abs
	}
	return s.opts.Path
}

// reloadProblems splits a reload error into its problems, one per configuration mistake.
func reloadProblems(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = []string{err.Error()}
	}
	return out
}

func (s *server) applyReload() (reloadReport, error) {
	old := s.conf.Load()
	f, err := config.Load(s.opts)
	if err != nil {
		return reloadReport{}, err
	}
	plan, err := s.prepareReload(f)
	if err != nil {
		return reloadReport{}, err
	}
	s.applyPlan(plan)
	s.conf.Store(f)

	applied, _ := splitChanges(changedKeys(old, f))
	// Waiting for a restart: what differs from the start, also when an earlier reload saw it.
	_, later := splitChanges(changedKeys(cmp.Or(s.started, old), f))
	listeners := slices.DeleteFunc(slices.Clone(later), func(k string) bool { return !slices.Contains(listenerKeys, k) })
	others := slices.DeleteFunc(slices.Clone(later), func(k string) bool { return slices.Contains(listenerKeys, k) })
	s.log.Info("configuration reloaded", "applied", strings.Join(applied, ","))
	if len(listeners) > 0 {
		s.log.Warn("listener addresses changed: the ports stay as they are until Ferry restarts "+
			"(a restart drains first: systemctl restart ferry)", "keys", strings.Join(listeners, ","))
	}
	if len(others) > 0 {
		s.log.Warn("these settings changed but take effect only when Ferry restarts", "keys", strings.Join(others, ","))
	}
	return reloadReport{Applied: applied, Restart: later}, nil
}

// reloadPlan is a loaded and checked configuration, ready to apply: applying it cannot fail.
type reloadPlan struct {
	f                  *config.File
	auth               auth.Config
	roomKeys           []string // nil: rooms off
	apiKeys            []signaling.APIKey
	turnCert, httpCert *keyPair // nil: no such TLS listener
}

// prepareReload loads and checks everything f asks for without changing the server.
func (s *server) prepareReload(f *config.File) (*reloadPlan, error) {
	p := &reloadPlan{f: f}
	secrets, _, _, err := ensureSecret(f)
	if err != nil {
		return nil, err
	}
	p.auth = authConfig(f, secrets)
	if _, err := auth.New(p.auth); err != nil {
		return nil, err
	}
	if s.tokens != nil { // room and check links, whether rooms are on or not
		keys, _, _, err := ensureRoomKeys(f)
		if err != nil {
			return nil, err
		}
		if _, err := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: keys}); err != nil {
			return nil, fmt.Errorf("rooms: %w", err)
		}
		p.roomKeys = keys
	}
	if p.apiKeys, err = apiKeys(f); err != nil {
		return nil, err
	}
	turnCert, turnKey, httpCert, httpKey := tlsFiles(f)
	for _, c := range []struct {
		r          *certReloader
		cert, key  string
		out        **keyPair
		listenerOf string
	}{{s.tls.turnCerts, turnCert, turnKey, &p.turnCert, "turn"}, {s.tls.httpCerts, httpCert, httpKey, &p.httpCert, "http"}} {
		if c.r == nil || c.cert == "" {
			continue // TLS turned on or off: a listener change, for the next start
		}
		kp, err := loadKeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.listenerOf, err)
		}
		*c.out = &kp
	}
	return p, nil
}

// applyPlan puts a checked configuration into force.
func (s *server) applyPlan(p *reloadPlan) {
	if err := s.auth.Update(p.auth); err != nil { // checked in prepareReload
		s.log.Error("reload: secrets not replaced", "err", err)
	}
	if p.roomKeys != nil {
		if err := s.tokens.UpdateKeys(p.roomKeys); err != nil {
			s.log.Error("reload: room signing keys not replaced", "err", err)
		}
	}
	if s.api != nil {
		s.api.SetAPIKeys(p.apiKeys)
	}
	s.relay.SetPeerPolicy(p.f.Relay.AllowedPeers, p.f.Relay.DeniedPeers)
	if err := s.relay.SetLimits(relayLimits(p.f)); err != nil { // config.Validate checked them
		s.log.Error("reload: relay limits not replaced", "err", err)
	}
	if p.turnCert != nil {
		s.tls.turnCerts.replace(*p.turnCert)
	}
	if p.httpCert != nil {
		s.tls.httpCerts.replace(*p.httpCert)
	}
	setLevel(s.level, p.f)
}

// changedKeys lists the settings ("relay.max_allocations", lists and maps whole) whose values
// differ between a and b. Only names: values may be secrets.
func changedKeys(a, b *config.File) []string {
	fa, fb := flatten(a), flatten(b)
	var out []string
	for k, v := range fa {
		if w, ok := fb[k]; !ok || !reflect.DeepEqual(v, w) {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// flatten maps each setting of f to its value as YAML reads it back.
func flatten(f *config.File) map[string]any {
	out := map[string]any{}
	data, err := yaml.Marshal(f)
	if err != nil {
		return out
	}
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return out
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			out[prefix] = v
			return
		}
		for k, sub := range m {
			walk(strings.TrimPrefix(prefix+"."+k, "."), sub)
		}
	}
	walk("", tree)
	return out
}

// splitChanges splits changed settings into those a reload applied and those that wait for
// a restart.
func splitChanges(keys []string) (applied, later []string) {
	for _, k := range keys {
		if slices.Contains(reloadable, k) {
			applied = append(applied, k)
		} else {
			later = append(later, k)
		}
	}
	return applied, later
}

// errNoReload is what ferry reload and ferry drain say when they cannot reach the server.
var errNoReload = errors.New("cannot reach the running server: no admin listener (admin.listen) and no " +
	"server.pid_file; signal it yourself: SIGHUP reloads (systemctl reload ferry), SIGTERM drains")
