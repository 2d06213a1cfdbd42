package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

const envPrefix = "FERRY_"

// Load reads the defaults, the file, the environment (Options.Environ) and the flags,
// resolves secret files and validates. The error lists every problem found, once, one per
// line, each naming the setting and, when the value came from an environment variable or a
// flag, that too.
func Load(opts Options) (*File, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(defaultYAML)); err != nil {
		return nil, fmt.Errorf("config: embedded default: %w", err)
	}
	defaultKeys := v.AllKeys()
	if opts.Path != "" {
		data, err := os.ReadFile(opts.Path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := v.MergeConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("config: %s: %w", opts.Path, err)
		}
	}
	var p problems
	src := sources{}
	env := environment(opts.Environ, knownKeys(v), src, &p)
	if err := v.MergeConfigMap(env); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	if opts.Flags != nil {
		for flag, key := range FlagKeys {
			if f := opts.Flags.Lookup(flag); f != nil && f.Changed {
				if err := v.BindPFlag(key, f); err != nil {
					p.add(key, "--%s: %v", flag, err)
				}
				src[key] = "--" + flag
			}
		}
	}
	var f File
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		decodeDuration, decodeSize, decodeBitrate, decodeAddrs, strictScalars, mapstructure.StringToWeakSliceHookFunc(",")))
	failed := map[string]bool{}
	if err := v.UnmarshalExact(&f, hook); err != nil {
		decodeProblems(err, defaultKeys, &p, failed)
	}
	f.resolveSecrets(&p)
	f.resolveRoomKeys(&p)
	f.resolveCluster(&p)
	for _, err := range f.Validate() {
		if pr, ok := err.(*problem); !ok || !slices.ContainsFunc(pr.keys(), func(k string) bool { return failed[baseKey(k)] }) {
			p.list = append(p.list, err)
		}
	}
	if len(p.list) > 0 {
		return &f, joinProblems(p.list, src)
	}
	return &f, nil
}

// sources maps a setting to where its value came from when that was not a file: an
// environment variable ("FERRY_RELAY_UDP_GSO") or a flag ("--relay-ip").
type sources map[string]string

// envKey is a setting an environment variable may set.
type envKey struct {
	key     string // "relay.udp_gso"
	emptyOK bool   // lists (emptied) and text (often "" means "off"), not switches or numbers
}

// knownKeys maps the FERRY_ variable of each key of the defaults to the key.
func knownKeys(v *viper.Viper) map[string]envKey {
	m := map[string]envKey{}
	for _, k := range v.AllKeys() {
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
		switch v.Get(k).(type) {
		case []any, string:
			m[name] = envKey{key: k, emptyOK: true}
		default:
			m[name] = envKey{key: k}
		}
	}
	return m
}

// environment returns the FERRY_* variables of environ as a configuration layer (nested
// maps, as a YAML file would give), records each one in src, and reports variables that
// name no key or leave a switch or a number empty.
func environment(environ []string, known map[string]envKey, src sources, p *problems) map[string]any {
	layer := map[string]any{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		k, ok := known[name]
		switch {
		case !ok:
			msg := name + " is not a configuration key"
			if s := suggestEnv(name, known); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			p.add("environment", "%s", msg)
			continue
		case value == "" && !k.emptyOK:
			// A switch or a number has no empty value: the variable is a mistake.
			p.add(k.key, "empty; give it a value or unset it")
			src[k.key] = name
			continue
		}
		src[k.key] = name
		section, setting, _ := strings.Cut(k.key, ".")
		m, _ := layer[section].(map[string]any)
		if m == nil {
			m = map[string]any{}
			layer[section] = m
		}
		m[setting] = value
	}
	return layer
}

// suggestEnv returns a known variable close to an unknown one ("did you mean").
func suggestEnv(name string, known map[string]envKey) string {
	best, bestDist := "", 3
	for k := range known {
		if d := editDistance(name, k); d > 0 && (d < bestDist || d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	return best
}

// strictScalars refuses what weak typing would bend: a fraction or an out-of-range number
// into a whole number (udp_sockets: 2.7), a boolean into a number or text (socket_buffer:
// true), a fraction into text (socket_buffer: 4.0 would read as 4 bytes), and text other
// than true or false into a switch.
func strictScalars(from, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if to == durationType || to == sizeType || to == bitrateType {
			return data, nil // decoded by their own hooks
		}
		switch v := data.(type) {
		case float64:
			if v != math.Trunc(v) || v >= math.MaxInt64 || v <= math.MinInt64 {
				return nil, fmt.Errorf("%v is not a whole number in range", v)
			}
		case bool:
			return nil, fmt.Errorf("%v is not a number", v)
		case string:
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a whole number", v)
			}
			return n, nil
		}
	case reflect.Bool:
		if v, ok := data.(string); ok {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("%q is not true or false", v)
			}
			return b, nil
		}
	case reflect.String:
		switch from.Kind() {
		case reflect.Bool, reflect.Float32, reflect.Float64:
			return nil, fmt.Errorf("%v is not a value this setting takes", data)
		}
	}
	return data, nil
}

// suggest returns a known key close to an unknown one ("did you mean").
func suggest(section, key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		sec, name, ok := strings.Cut(k, ".")
		if !ok || (section != "" && sec != section) {
			continue
		}
		if d := editDistance(key, name); d > 0 && d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// decodeProblems turns mapstructure's errors into one problem per setting (or unknown key)
// and marks in failed the settings whose value could not be read, whose other problems are
// then left out (a bad duration is not also "0s, must be positive").
func decodeProblems(err error, known []string, p *problems, failed map[string]bool) {
	var leaves []*mapstructure.DecodeError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *mapstructure.DecodeError:
			leaves = append(leaves, e)
		case interface{ Unwrap() []error }:
			for _, err := range e.Unwrap() {
				walk(err)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		default:
			p.add("config", "%v", err) // not mapstructure's: say it as it is
		}
	}
	walk(err)
	for _, de := range leaves {
		name, cause := de.Name(), de.Unwrap()
		if keys, ok := strings.CutPrefix(cause.Error(), "has invalid keys: "); ok {
			for _, k := range strings.Split(keys, ", ") {
				unknownKey(p, name, k, known)
			}
			continue
		}
		key := strings.TrimSuffix(name, "]")
		if i := strings.LastIndexByte(key, '['); i >= 0 && key != name {
			key = key[:i] // an entry of a list: the message quotes it
		} else {
			key = name
		}
		failed[baseKey(key)] = true
		p.add(key, "%s", strings.TrimPrefix(cause.Error(), "'"+name+"' "))
	}
}

// unknownKey reports key, which section does not have, with a known key it may mean.
func unknownKey(p *problems, section, key string, known []string) {
	msg := "unknown top-level key " + key
	if section != "" {
		msg = "unknown key " + section + "." + key
	}
	if s := suggest(section, key, known); s != "" {
		msg += " (did you mean " + s + "?)"
	}
	p.list = append(p.list, errors.New(msg))
}

// baseKey is the setting a key names, without list indexes: "auth.static_users" for
// "auth.static_users[0].name".
func baseKey(key string) string {
	k, _, _ := strings.Cut(key, "[")
	return k
}

// joinProblems makes one error whose message lists every problem on its own line, each
// saying where a value came from when it was an environment variable or a flag
// ("FERRY_RELAY_UDP_GSO (relay.udp_gso): \"maybe\" is not true or false").
func joinProblems(list []error, src sources) error {
	lines := make([]string, len(list))
	for i, err := range list {
		lines[i] = "  - " + src.describe(err)
	}
	return fmt.Errorf("config: %d problem(s):\n%s", len(list), strings.Join(lines, "\n"))
}

// describe renders a problem with the sources of the settings it names.
func (s sources) describe(err error) string {
	pr, ok := err.(*problem)
	if !ok {
		return err.Error()
	}
	where := pr.key
	if from := s[baseKey(pr.key)]; from != "" {
		where = from + " (" + pr.key + ")"
	}
	var notes []string
	for _, k := range pr.related {
		if from := s[baseKey(k)]; from != "" {
			notes = append(notes, k+" from "+from)
		}
	}
	msg := where + ": " + pr.msg
	if len(notes) > 0 {
		msg += " (" + strings.Join(notes, ", ") + ")"
	}
	return msg
}

// resolveSecrets reads auth.secrets_file (one secret per line; blank lines and lines
// starting with # are ignored).
func (f *File) resolveSecrets(p *problems) {
	if f.Auth.SecretsFile == "" {
		return
	}
	if len(f.Auth.Secrets) > 0 {
		p.addFor("auth.secrets_file", []string{"auth.secrets"}, "set auth.secrets or auth.secrets_file, not both")
		return
	}
	data, err := os.ReadFile(f.Auth.SecretsFile)
	if err != nil {
		p.add("auth.secrets_file", "%v", err)
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			f.Auth.Secrets = append(f.Auth.Secrets, line)
		}
	}
	if len(f.Auth.Secrets) == 0 {
		p.add("auth.secrets_file", "%s holds no secret", f.Auth.SecretsFile)
	}
}
