// Package config is Ferry's configuration: the YAML schema with its embedded defaults, the
// FERRY_<SECTION>_<KEY> environment and flag overlay (spf13/viper), and validation that
// reports every problem at once.
package config

import (
	"bytes"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded default configuration (YAML, with comments).
func Default() []byte { return bytes.Clone(defaultYAML) }

// File is the whole configuration.
type File struct {
	Server   ServerSection   `mapstructure:"server" yaml:"server"`
	Log      LogSection      `mapstructure:"log" yaml:"log"`
	TURN     TURNSection     `mapstructure:"turn" yaml:"turn"`
	Relay    RelaySection    `mapstructure:"relay" yaml:"relay"`
	Auth     AuthSection     `mapstructure:"auth" yaml:"auth"`
	HTTP     HTTPSection     `mapstructure:"http" yaml:"http"`
	API      APISection      `mapstructure:"api" yaml:"api"`
	AllocLog AllocLogSection `mapstructure:"alloclog" yaml:"alloclog"`
	Admin    AdminSection    `mapstructure:"admin" yaml:"admin"`
	Runtime  RuntimeSection  `mapstructure:"runtime" yaml:"runtime"`
	Rooms    RoomsSection    `mapstructure:"rooms" yaml:"rooms"`
}

// RuntimeSection tunes the Go runtime's garbage collector.
type RuntimeSection struct {
	// GOGC is the GC target percentage (Go's GOGC); 0 means the GOGC environment variable
	// when set, else Ferry's default of 50 (cmd/ferry). Lower trades CPU for memory.
	GOGC int `mapstructure:"gogc" yaml:"gogc"`
	// MemoryLimit is a soft memory limit for the Go runtime (Go's GOMEMLIMIT), e.g. "1GiB";
	// "" keeps the environment's or none.
	MemoryLimit string `mapstructure:"memory_limit" yaml:"memory_limit"`
}

// MemoryLimitBytes parses runtime.memory_limit ("512MiB", "2GiB", "1000000"), or returns -1
// for "".
func (r RuntimeSection) MemoryLimitBytes() (int64, error) {
	if s := strings.TrimSpace(r.MemoryLimit); s == "" || s == "0" {
		return -1, nil
	}
	n, err := parseSize("runtime.memory_limit", r.MemoryLimit)
	if err == nil && n < minMemoryLimit {
		hint := ""
		if _, bare := strconv.Atoi(strings.TrimSpace(r.MemoryLimit)); bare == nil {
			hint = fmt.Sprintf(" (a bare number is bytes: did you mean %sMiB?)", strings.TrimSpace(r.MemoryLimit))
		}
		return 0, fmt.Errorf("runtime.memory_limit: %q is less than 64MiB%s", r.MemoryLimit, hint)
	}
	return n, err
}

// minMemoryLimit is the smallest runtime.memory_limit taken: below it the collector would run
// without pause (a bare "512" is bytes, not megabytes).
const minMemoryLimit = 64 << 20

// parseSize parses a byte size: a positive integer with an optional B, KiB, MiB, GiB or TiB
// suffix ("512MiB", "4MiB", "1000000"). key names the setting in the error.
func parseSize(key, in string) (int64, error) {
	s := strings.TrimSpace(in)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%s: %q is not a size like 512MiB or 2GiB", key, in)
	}
	return n * mult, nil
}

// maxSocketBuffer bounds turn.socket_buffer and relay.socket_buffer (the kernel takes an int
// and doubles it).
const maxSocketBuffer = 1 << 30

// socketBuffer parses a socket buffer size; "" or "0" mean the kernel default (0).
func socketBuffer(key, in string) (int, error) {
	if s := strings.TrimSpace(in); s == "" || s == "0" {
		return 0, nil
	}
	n, err := parseSize(key, in)
	if err != nil {
		return 0, err
	}
	if n > maxSocketBuffer {
		return 0, fmt.Errorf("%s: %q is more than 1GiB", key, in)
	}
	return int(n), nil
}

// SocketBufferBytes parses turn.socket_buffer: bytes for each listener socket's receive and
// send buffer, 0 for the kernel default.
func (t TURNSection) SocketBufferBytes() (int, error) {
	return socketBuffer("turn.socket_buffer", t.SocketBuffer)
}

// SocketBufferBytes parses relay.socket_buffer: bytes for each UDP relay socket's receive
// and send buffer, 0 for the kernel default.
func (r RelaySection) SocketBufferBytes() (int, error) {
	return socketBuffer("relay.socket_buffer", r.SocketBuffer)
}

// AdminSection configures the admin listener: /metrics, /healthz, /readyz, /debug/pprof.
type AdminSection struct {
	Listen string `mapstructure:"listen" yaml:"listen"` // "" disables
	Pprof  bool   `mapstructure:"pprof" yaml:"pprof"`
}

// AllocLogSection configures the allocation log (alloclog.db in the data directory).
type AllocLogSection struct {
	Enabled               bool          `mapstructure:"enabled" yaml:"enabled"`
	Retention             time.Duration `mapstructure:"retention" yaml:"retention"`
	PurgeInterval         time.Duration `mapstructure:"purge_interval" yaml:"purge_interval"`
	AllowRetentionOver48h bool          `mapstructure:"allow_retention_over_48h" yaml:"allow_retention_over_48h"`
	QueueLength           int           `mapstructure:"queue_length" yaml:"queue_length"`
}

// HTTPSection configures the signaling HTTP listener (ICE servers, health).
type HTTPSection struct {
	Listen            string        `mapstructure:"listen" yaml:"listen"` // "" disables
	TLSCertFile       string        `mapstructure:"tls_cert_file" yaml:"tls_cert_file"`
	TLSKeyFile        string        `mapstructure:"tls_key_file" yaml:"tls_key_file"`
	TrustedProxies    []string      `mapstructure:"trusted_proxies" yaml:"trusted_proxies"`
	AllowedOrigins    []string      `mapstructure:"allowed_origins" yaml:"allowed_origins"`
	MaxBodyBytes      int64         `mapstructure:"max_body_bytes" yaml:"max_body_bytes"`
	MaxHeaderBytes    int           `mapstructure:"max_header_bytes" yaml:"max_header_bytes"`
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout" yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `mapstructure:"read_timeout" yaml:"read_timeout"`
	WriteTimeout      time.Duration `mapstructure:"write_timeout" yaml:"write_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout" yaml:"idle_timeout"`
	// PublicURL is the base of consultation links, e.g. "https://consult.clinic.example";
	// "" means http://<server.public_host or relay IP>:<http.listen port>.
	PublicURL string `mapstructure:"public_url" yaml:"public_url"`
}

// APISection configures the API keys that may call the HTTP API.
type APISection struct {
	Keys  []APIKey `mapstructure:"keys" yaml:"keys"`
	Rate  float64  `mapstructure:"rate" yaml:"rate"`   // requests per second per key
	Burst int      `mapstructure:"burst" yaml:"burst"` // bucket size per key
}

// APIKey is a named API key, stored as the hex SHA-256 of the key (ferry apikey new).
type APIKey struct {
	Name   string `mapstructure:"name" yaml:"name"`
	SHA256 string `mapstructure:"sha256" yaml:"sha256"`
}

// ServerSection holds process-wide settings.
type ServerSection struct {
	// DataDir holds generated secrets and the allocation log; "" means the user state dir.
	DataDir string `mapstructure:"data_dir" yaml:"data_dir"`
	// PublicHost is the host name (or IP) clients use in turn: URLs; "" means the advertised
	// or relay IP.
	PublicHost string `mapstructure:"public_host" yaml:"public_host"`
}

// LogSection configures the process log (log/slog).
type LogSection struct {
	Level  string `mapstructure:"level" yaml:"level"`   // debug | info | warn | error
	Format string `mapstructure:"format" yaml:"format"` // text | json
}

// TURNSection configures the TURN/STUN listeners.
type TURNSection struct {
	Realm       string   `mapstructure:"realm" yaml:"realm"`
	UDPListen   []string `mapstructure:"udp_listen" yaml:"udp_listen"`
	TCPListen   []string `mapstructure:"tcp_listen" yaml:"tcp_listen"`
	TLSListen   []string `mapstructure:"tls_listen" yaml:"tls_listen"`
	TLSCertFile string   `mapstructure:"tls_cert_file" yaml:"tls_cert_file"`
	TLSKeyFile  string   `mapstructure:"tls_key_file" yaml:"tls_key_file"`
	// UDPSockets is the number of SO_REUSEPORT sockets per UDP listen address; 0 means one
	// per CPU (GOMAXPROCS), at most 64.
	UDPSockets int `mapstructure:"udp_sockets" yaml:"udp_sockets"`
	// SocketBuffer sizes each listener socket's receive and send buffer ("4MiB"); "" or "0"
	// keeps the kernel default.
	SocketBuffer string `mapstructure:"socket_buffer" yaml:"socket_buffer"`
}

// RelaySection configures relayed transport addresses and the peer policy.
type RelaySection struct {
	BindIP              string        `mapstructure:"bind_ip" yaml:"bind_ip"` // "auto" or an IPv4 address
	BindIPv6            string        `mapstructure:"bind_ipv6" yaml:"bind_ipv6"`
	AdvertisedIP        string        `mapstructure:"advertised_ip" yaml:"advertised_ip"`
	AdvertisedIPv6      string        `mapstructure:"advertised_ipv6" yaml:"advertised_ipv6"`
	PortMin             int           `mapstructure:"port_min" yaml:"port_min"`
	PortMax             int           `mapstructure:"port_max" yaml:"port_max"`
	AllowedPeers        []string      `mapstructure:"allowed_peers" yaml:"allowed_peers"`
	DeniedPeers         []string      `mapstructure:"denied_peers" yaml:"denied_peers"`
	TCPAllocations      bool          `mapstructure:"tcp_allocations" yaml:"tcp_allocations"`
	StrictAddressFamily bool          `mapstructure:"strict_address_family" yaml:"strict_address_family"`
	LegacyChannels      bool          `mapstructure:"legacy_channel_numbers" yaml:"legacy_channel_numbers"`
	PacketMetrics       bool          `mapstructure:"packet_metrics" yaml:"packet_metrics"`
	SocketBuffer        string        `mapstructure:"socket_buffer" yaml:"socket_buffer"`
	UDPGSO              bool          `mapstructure:"udp_gso" yaml:"udp_gso"`
	MaxAllocationAge    time.Duration `mapstructure:"max_allocation_age" yaml:"max_allocation_age"`
	MaxPermissions      int           `mapstructure:"max_permissions" yaml:"max_permissions"`
	MaxConnectionsPerIP int           `mapstructure:"max_connections_per_ip" yaml:"max_connections_per_ip"`
	MaxConnections      int           `mapstructure:"max_connections" yaml:"max_connections"`
	MaxAllocations      int           `mapstructure:"max_allocations" yaml:"max_allocations"`
	MaxAllocationsUser  int           `mapstructure:"max_allocations_per_user" yaml:"max_allocations_per_user"`
	UnauthRate          float64       `mapstructure:"unauth_rate" yaml:"unauth_rate"`
	UnauthBurst         int           `mapstructure:"unauth_burst" yaml:"unauth_burst"`
}

// AuthSection configures credentials.
type AuthSection struct {
	// Secrets are the TURN REST secrets after resolution (SecretsFile read in). Never logged.
	Secrets     []string      `mapstructure:"secrets" yaml:"secrets"`
	SecretsFile string        `mapstructure:"secrets_file" yaml:"secrets_file"`
	MaxTTL      time.Duration `mapstructure:"max_ttl" yaml:"max_ttl"`
	DefaultTTL  time.Duration `mapstructure:"default_ttl" yaml:"default_ttl"`
	ClockSkew   time.Duration `mapstructure:"clock_skew" yaml:"clock_skew"`
	StaticUsers []StaticUser  `mapstructure:"static_users" yaml:"static_users"`
}

// StaticUser is a fixed username and password for legacy apps.
type StaticUser struct {
	Name     string `mapstructure:"name" yaml:"name"`
	Password string `mapstructure:"password" yaml:"password"`
}

// Options say where configuration comes from besides the embedded default.
type Options struct {
	// Path is a YAML file merged over the defaults; "" means none.
	Path string
	// Flags are command-line flags bound to keys (see FlagKeys); only changed flags apply.
	Flags *pflag.FlagSet
	// Environ is the process environment (os.Environ()); FERRY_* variables override keys.
	Environ []string
}

// FlagKeys maps flag names to configuration keys for the common settings.
var FlagKeys = map[string]string{
	"data-dir":      "server.data_dir",
	"public-host":   "server.public_host",
	"http-listen":   "http.listen",
	"admin-listen":  "admin.listen",
	"log-level":     "log.level",
	"log-format":    "log.format",
	"realm":         "turn.realm",
	"udp-listen":    "turn.udp_listen",
	"tcp-listen":    "turn.tcp_listen",
	"tls-listen":    "turn.tls_listen",
	"relay-ip":      "relay.bind_ip",
	"advertised-ip": "relay.advertised_ip",
	"allowed-peer":  "relay.allowed_peers",
}

// AddFlags registers the common flags on fs.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("data-dir", "", "state directory (server.data_dir)")
	fs.String("public-host", "", "host name clients use in turn: URLs (server.public_host)")
	fs.String("http-listen", "", "signaling HTTP listen address, \"\" to disable (http.listen)")
	fs.String("admin-listen", "", "admin (metrics) listen address, \"\" to disable (admin.listen)")
	fs.String("log-level", "", "debug, info, warn or error (log.level)")
	fs.String("log-format", "", "text or json (log.format)")
	fs.String("realm", "", "TURN realm (turn.realm)")
	fs.StringSlice("udp-listen", nil, "UDP listen addresses (turn.udp_listen)")
	fs.StringSlice("tcp-listen", nil, "TCP listen addresses (turn.tcp_listen)")
	fs.StringSlice("tls-listen", nil, "TLS listen addresses (turn.tls_listen)")
	fs.String("relay-ip", "", "relay bind IPv4 address or auto (relay.bind_ip)")
	fs.String("advertised-ip", "", "public IPv4 address behind 1:1 NAT (relay.advertised_ip)")
	fs.StringSlice("allowed-peer", nil, "peer CIDR to allow (relay.allowed_peers)")
}

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
	problems = append(problems, f.resolveRoomKeys()...)
	problems = append(problems, f.validateRooms()...)
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

// Validate checks every value and returns all problems.
func (f *File) Validate() []error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }

	if h := f.Server.PublicHost; h != "" && (strings.ContainsAny(h, "/?#@ :") && !isIPv6(h)) {
		add("server.public_host: %q is not a host name or IP address", h)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, f.Log.Level) {
		add("log.level: %q is not debug, info, warn or error", f.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, f.Log.Format) {
		add("log.format: %q is not text or json", f.Log.Format)
	}

	if r := f.TURN.Realm; r == "" || len(r) > 763 || len([]rune(r)) > 127 || strings.IndexFunc(r, unicode.IsControl) >= 0 {
		add("turn.realm: must be 1-127 printable characters, got %q", r)
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"turn.udp_listen", f.TURN.UDPListen}, {"turn.tcp_listen", f.TURN.TCPListen}, {"turn.tls_listen", f.TURN.TLSListen}} {
		for _, a := range l.list {
			if err := checkListen(a); err != nil {
				add("%s: %q: %v", l.key, a, err)
			}
		}
	}
	if len(f.TURN.UDPListen)+len(f.TURN.TCPListen)+len(f.TURN.TLSListen) == 0 {
		add("turn: no listeners: set udp_listen, tcp_listen or tls_listen")
	}
	if n := f.TURN.UDPSockets; n < 0 || n > 64 {
		add("turn.udp_sockets: %d is not 0 (one per CPU) to 64", n)
	}
	if _, err := f.TURN.SocketBufferBytes(); err != nil {
		p = append(p, err)
	}
	if _, err := f.Relay.SocketBufferBytes(); err != nil {
		p = append(p, err)
	}
	if len(f.TURN.TLSListen) > 0 && (f.TURN.TLSCertFile == "" || f.TURN.TLSKeyFile == "") {
		add("turn.tls_listen needs turn.tls_cert_file and turn.tls_key_file")
	}
	p = append(p, checkKeyPair("turn", f.TURN.TLSCertFile, f.TURN.TLSKeyFile)...)
	seen := map[string]string{}
	for _, l := range []struct {
		key, network string
		list         []string
	}{{"turn.udp_listen", "udp", f.TURN.UDPListen}, {"turn.tcp_listen", "tcp", f.TURN.TCPListen},
		{"turn.tls_listen", "tcp", f.TURN.TLSListen}, {"http.listen", "tcp", []string{f.HTTP.Listen}},
		{"admin.listen", "tcp", []string{f.Admin.Listen}}} {
		for _, a := range l.list {
			if a == "" || strings.HasSuffix(a, ":0") {
				continue
			}
			k := l.network + " " + a
			if other, dup := seen[k]; dup && (l.key != "http.listen" || other != "turn.tls_listen") {
				add("%s: %q is also in %s", l.key, a, other) // (HTTPS may share a TURN TLS port)
			}
			seen[k] = l.key
		}
	}

	checkIP := func(key, s string, v6 bool, allowAuto bool) {
		if s == "" || (allowAuto && s == "auto") {
			return
		}
		ip, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			add("%s: %q is not an IP address", key, s)
		case v6 && !ip.Is6():
			add("%s: %q is not an IPv6 address", key, s)
		case !v6 && !ip.Unmap().Is4():
			add("%s: %q is not an IPv4 address", key, s)
		case ip.IsUnspecified() || ip.IsMulticast():
			add("%s: %q cannot be a relayed address", key, s)
		}
	}
	checkIP("relay.bind_ip", f.Relay.BindIP, false, true)
	checkIP("relay.bind_ipv6", f.Relay.BindIPv6, true, false)
	checkIP("relay.advertised_ip", f.Relay.AdvertisedIP, false, false)
	checkIP("relay.advertised_ipv6", f.Relay.AdvertisedIPv6, true, false)
	if f.Relay.BindIP == "" && f.Relay.BindIPv6 == "" {
		add("relay: bind_ip and bind_ipv6 are both empty: nothing to relay from")
	}
	if f.Relay.AdvertisedIPv6 != "" && f.Relay.BindIPv6 == "" {
		add("relay.advertised_ipv6 needs relay.bind_ipv6")
	}
	if f.Relay.PortMin < 1024 || f.Relay.PortMax > 65535 || f.Relay.PortMin > f.Relay.PortMax {
		add("relay: port range %d-%d must lie within 1024-65535 with port_min <= port_max", f.Relay.PortMin, f.Relay.PortMax)
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"relay.allowed_peers", f.Relay.AllowedPeers}, {"relay.denied_peers", f.Relay.DeniedPeers}} {
		for _, s := range l.list {
			if _, err := ParseCIDR(s); err != nil {
				add("%s: %q is not a CIDR or IP address", l.key, s)
			}
		}
	}
	if f.Relay.MaxAllocationAge <= 0 {
		add("relay.max_allocation_age: must be positive, got %s", f.Relay.MaxAllocationAge)
	}
	if f.Relay.MaxAllocations < 0 || f.Relay.MaxAllocationsUser < 0 {
		add("relay: allocation caps cannot be negative")
	}
	if f.Relay.MaxPermissions < 1 || f.Relay.MaxPermissions > 4096 {
		add("relay.max_permissions: must be 1-4096, got %d", f.Relay.MaxPermissions)
	}
	if f.Relay.MaxConnectionsPerIP < 1 || f.Relay.MaxConnections < 1 {
		add("relay: max_connections_per_ip and max_connections must be positive")
	}
	if f.Relay.UnauthBurst < 0 {
		add("relay.unauth_burst: cannot be negative")
	}

	if f.Auth.MaxTTL <= 0 || f.Auth.MaxTTL > 7*24*time.Hour {
		add("auth.max_ttl: must be in (0, 168h], got %s", f.Auth.MaxTTL)
	}
	if f.Auth.DefaultTTL <= 0 || f.Auth.DefaultTTL > f.Auth.MaxTTL {
		add("auth.default_ttl: must be positive and at most auth.max_ttl (%s), got %s", f.Auth.MaxTTL, f.Auth.DefaultTTL)
	}
	if f.Auth.ClockSkew < 0 || f.Auth.ClockSkew > time.Hour {
		add("auth.clock_skew: must be in [0, 1h], got %s", f.Auth.ClockSkew)
	}
	for i, s := range f.Auth.Secrets {
		if len(s) < 16 {
			add("auth.secrets[%d]: shorter than 16 characters", i)
		}
	}
	names := map[string]bool{}
	for i, u := range f.Auth.StaticUsers {
		if u.Name == "" || u.Password == "" {
			add("auth.static_users[%d]: name and password are required", i)
		}
		if names[u.Name] {
			add("auth.static_users[%d]: duplicate name", i)
		}
		if strings.Contains(u.Name, ":") {
			add("auth.static_users[%d]: a static name cannot contain ':' (reserved for REST usernames)", i)
		}
		if strings.IndexFunc(u.Name, unicode.IsControl) >= 0 {
			add("auth.static_users[%d]: the name contains a control character", i)
		}
		names[u.Name] = true
	}
	p = append(p, f.validateHTTP()...)
	if f.Runtime.GOGC < 0 {
		add("runtime.gogc: must be positive (or 0 for the default), got %d", f.Runtime.GOGC)
	}
	if _, err := f.Runtime.MemoryLimitBytes(); err != nil {
		p = append(p, err)
	}
	if a := f.Admin.Listen; a != "" {
		if err := checkListen(a); err != nil {
			add("admin.listen: %q: %v", a, err)
		} else if a == f.HTTP.Listen && !strings.HasSuffix(a, ":0") {
			add("admin.listen: must differ from http.listen: metrics never go on the public listener")
		}
	}
	if a := f.AllocLog; a.Enabled {
		switch {
		case a.Retention <= 0:
			add("alloclog.retention: must be positive, got %s", a.Retention)
		case a.Retention > 48*time.Hour && !a.AllowRetentionOver48h:
			add("alloclog.retention: %s is longer than the 48h promised to patients; set alloclog.allow_retention_over_48h: true to keep records longer", a.Retention)
		}
		if a.PurgeInterval <= 0 || a.PurgeInterval > a.Retention {
			add("alloclog.purge_interval: must be positive and at most the retention, got %s", a.PurgeInterval)
		}
		if a.QueueLength <= 0 {
			add("alloclog.queue_length: must be positive")
		}
	}
	return p
}

func (f *File) validateHTTP() []error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	h := f.HTTP
	if h.Listen != "" {
		if err := checkListen(h.Listen); err != nil {
			add("http.listen: %q: %v", h.Listen, err)
		}
	}
	if (h.TLSCertFile == "") != (h.TLSKeyFile == "") {
		add("http: set both tls_cert_file and tls_key_file, or neither")
	}
	p = append(p, checkKeyPair("http", h.TLSCertFile, h.TLSKeyFile)...)
	for _, s := range h.TrustedProxies {
		if _, err := ParseCIDR(s); err != nil {
			add("http.trusted_proxies: %q is not a CIDR or IP address", s)
		}
	}
	for _, o := range h.AllowedOrigins {
		if !validOrigin(o) {
			add("http.allowed_origins: %q is not an origin like https://app.example.org (no wildcard, no path)", o)
		}
	}
	if h.MaxBodyBytes <= 0 || h.MaxHeaderBytes <= 0 {
		add("http: max_body_bytes and max_header_bytes must be positive")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"read_header_timeout", h.ReadHeaderTimeout}, {"read_timeout", h.ReadTimeout}, {"write_timeout", h.WriteTimeout}, {"idle_timeout", h.IdleTimeout}} {
		if d.v <= 0 {
			add("http.%s: must be positive, got %s", d.key, d.v)
		}
	}
	names := map[string]bool{}
	for i, k := range f.API.Keys {
		switch {
		case k.Name == "":
			add("api.keys[%d]: name is required", i)
		case names[k.Name]:
			add("api.keys[%d]: duplicate name %q", i, k.Name)
		}
		names[k.Name] = true
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 {
			add("api.keys[%d]: sha256 must be 64 hex digits (see ferry apikey new)", i)
		}
	}
	if f.API.Burst <= 0 && f.API.Rate >= 0 {
		add("api.burst: must be positive")
	}
	return p
}

// validOrigin accepts a serialized origin: scheme://host[:port], no path, no wildcard.
func validOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.User == nil && !strings.Contains(o, "*")
}

// checkKeyPair loads a PEM certificate and key to find a missing file, a bad PEM or a key
// that does not match, at start-up rather than at the first handshake.
func checkKeyPair(section, cert, key string) []error {
	if cert == "" || key == "" {
		return nil
	}
	var p []error
	for _, file := range []struct{ key, path string }{{section + ".tls_cert_file", cert}, {section + ".tls_key_file", key}} {
		if _, err := os.Stat(file.path); err != nil {
			p = append(p, fmt.Errorf("%s: %w", file.key, err))
		}
	}
	if len(p) > 0 {
		return p
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		p = append(p, fmt.Errorf("%s.tls_cert_file and tls_key_file: %w", section, err))
	}
	return p
}

func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

func checkListen(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return errors.New("host must be an IP address")
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return errors.New("port must be 0-65535")
	}
	return nil
}

// ParseCIDR parses a CIDR or a bare address (a single host).
func ParseCIDR(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Redacted returns the configuration as YAML with every secret and password replaced.
func (f *File) Redacted() ([]byte, error) {
	c := *f
	c.Auth.Secrets = redact(f.Auth.Secrets)
	c.Rooms.SigningKeys = redact(f.Rooms.SigningKeys)
	c.Auth.StaticUsers = nil
	for _, u := range f.Auth.StaticUsers {
		c.Auth.StaticUsers = append(c.Auth.StaticUsers, StaticUser{Name: u.Name, Password: "<redacted>"})
	}
	return yaml.Marshal(c)
}

func redact(in []string) []string {
	out := make([]string, len(in))
	for i := range in {
		out[i] = "<redacted>"
	}
	return out
}
