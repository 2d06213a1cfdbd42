package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

const envPrefix = "FERRY_"

// Load reads the defaults, the file, the environment and the flags, resolves secret files and
// validates. The error lists every problem found, one per line.
func Load(opts Options) (*File, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(defaultYAML)); err != nil {
		return nil, fmt.Errorf("config: embedded default: %w", err)
	}
	defaultKeys := v.AllKeys()
	var problems []error
	if opts.Path != "" {
		data, err := os.ReadFile(opts.Path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := v.MergeConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("config: %s: %w", opts.Path, err)
		}
	}
	known := knownKeys(v)
	v.SetEnvPrefix(strings.TrimSuffix(envPrefix, "_"))
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AllowEmptyEnv(true)
	v.AutomaticEnv()
	for _, kv := range opts.Environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		key := strings.ToLower(strings.TrimPrefix(name, envPrefix))
		emptyOK, ok := known[key]
		switch _, value, _ := strings.Cut(kv, "="); {
		case !ok:
			problems = append(problems, fmt.Errorf("environment: %s is not a configuration key", name))
		case value == "" && !emptyOK:
			// A switch or a number has no empty value: the variable is a mistake.
			problems = append(problems, fmt.Errorf("environment: %s is empty; give it a value or unset it", name))
		}
	}
	if opts.Flags != nil {
		for flag, key := range FlagKeys {
			if f := opts.Flags.Lookup(flag); f != nil && f.Changed {
				if err := v.BindPFlag(key, f); err != nil {
					problems = append(problems, err)
				}
			}
		}
	}
	var f File
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationNeedsUnit, strictScalars, mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(",")))
	if err := v.UnmarshalExact(&f, hook); err != nil {
		problems = append(problems, decodeProblems(err, defaultKeys)...)
	}
	problems = append(problems, f.resolveSecrets()...)
	problems = append(problems, f.Validate()...)
	if len(problems) > 0 {
		return &f, joinProblems(problems)
	}
	return &f, nil
}

// knownKeys returns the underscore-joined keys (as in FERRY_ variables) of the defaults.
// The value is true for keys that take an empty value: lists (emptied) and text (often ""
// means "off"), not booleans or numbers.
func knownKeys(v *viper.Viper) map[string]bool {
	m := map[string]bool{}
	for _, k := range v.AllKeys() {
		switch v.Get(k).(type) {
		case []any, string:
			m[strings.ReplaceAll(k, ".", "_")] = true
		default:
			m[strings.ReplaceAll(k, ".", "_")] = false
		}
	}
	return m
}

// strictScalars refuses what weak typing would bend: a fraction or an out-of-range number
// into a whole number (udp_sockets: 2.7), a boolean into a number or text (socket_buffer:
// true), and a fraction into text (socket_buffer: 4.0 would read as 4 bytes).
func strictScalars(from, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if to == durationType {
			return data, nil
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
	case reflect.String:
		switch from.Kind() {
		case reflect.Bool, reflect.Float32, reflect.Float64:
			return nil, fmt.Errorf("%v is not a value this setting takes", data)
		}
	}
	return data, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// durationNeedsUnit refuses a bare number for a duration: YAML "12" would otherwise mean
// 12 nanoseconds.
func durationNeedsUnit(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("%v is a duration without a unit; write e.g. 30s, 5m or 12h", data)
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

// decodeProblems splits mapstructure's combined error into one problem per line.
func decodeProblems(err error, known []string) []error {
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.HasSuffix(line, "error(s) decoding:") || strings.HasPrefix(line, "decoding failed due to") {
			continue
		}
		if section, keys, ok := strings.Cut(line, " has invalid keys: "); ok {
			section = strings.Trim(section, "'")
			for _, k := range strings.Split(keys, ", ") {
				msg := "unknown top-level key " + k
				if section != "" {
					msg = "unknown key " + section + "." + k
				}
				if s := suggest(section, k, known); s != "" {
					msg += " (did you mean " + s + "?)"
				}
				out = append(out, errors.New(msg))
			}
			continue
		}
		out = append(out, errors.New(line))
	}
	if len(out) == 0 {
		out = append(out, err)
	}
	return out
}

// joinProblems makes one error whose message lists every problem on its own line.
func joinProblems(problems []error) error {
	lines := make([]string, len(problems))
	for i, p := range problems {
		lines[i] = "  - " + p.Error()
	}
	return fmt.Errorf("config: %d problem(s):\n%s", len(problems), strings.Join(lines, "\n"))
}

// resolveSecrets reads auth.secrets_file (one secret per line; blank lines and lines
// starting with # are ignored).
func (f *File) resolveSecrets() []error {
	if f.Auth.SecretsFile == "" {
		return nil
	}
	if len(f.Auth.Secrets) > 0 {
		return []error{errors.New("auth: set secrets or secrets_file, not both")}
	}
	data, err := os.ReadFile(f.Auth.SecretsFile)
	if err != nil {
		return []error{fmt.Errorf("auth.secrets_file: %w", err)}
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			f.Auth.Secrets = append(f.Auth.Secrets, line)
		}
	}
	if len(f.Auth.Secrets) == 0 {
		return []error{fmt.Errorf("auth.secrets_file: %s holds no secret", f.Auth.SecretsFile)}
	}
	return nil
}
