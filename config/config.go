// Package config is Ferry's configuration: the YAML schema with its embedded defaults, the
// FERRY_<SECTION>_<KEY> environment and flag overlay (spf13/viper), and validation that
// reports every problem at once.
package config

import (
	"bytes"
	_ "embed"
	"net/netip"
	"time"

	"github.com/spf13/pflag"
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
	Cluster  ClusterSection  `mapstructure:"cluster" yaml:"cluster"`
}

// RuntimeSection tunes the Go runtime's garbage collector.
type RuntimeSection struct {
	// GOGC is the GC target percentage (Go's GOGC); 0 means the GOGC environment variable
	// when set, else Ferry's default of 50 (cmd/ferry). Lower trades CPU for memory.
	GOGC int `mapstructure:"gogc" yaml:"gogc"`
	// MemoryLimit is a soft memory limit for the Go runtime (Go's GOMEMLIMIT), e.g. 1GiB, at
	// least 64MiB; 0 ("") keeps the environment's or none.
	MemoryLimit Size `mapstructure:"memory_limit" yaml:"memory_limit"`
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
	Listen            string         `mapstructure:"listen" yaml:"listen"` // "" disables
	TLSCertFile       string         `mapstructure:"tls_cert_file" yaml:"tls_cert_file"`
	TLSKeyFile        string         `mapstructure:"tls_key_file" yaml:"tls_key_file"`
	TrustedProxies    []netip.Prefix `mapstructure:"trusted_proxies" yaml:"trusted_proxies"` // CIDRs; a bare address is one host
	AllowedOrigins    []string       `mapstructure:"allowed_origins" yaml:"allowed_origins"`
	MaxBodyBytes      int64          `mapstructure:"max_body_bytes" yaml:"max_body_bytes"`
	MaxHeaderBytes    int            `mapstructure:"max_header_bytes" yaml:"max_header_bytes"`
	ReadHeaderTimeout time.Duration  `mapstructure:"read_header_timeout" yaml:"read_header_timeout"`
	ReadTimeout       time.Duration  `mapstructure:"read_timeout" yaml:"read_timeout"`
	WriteTimeout      time.Duration  `mapstructure:"write_timeout" yaml:"write_timeout"`
	IdleTimeout       time.Duration  `mapstructure:"idle_timeout" yaml:"idle_timeout"`
	// PublicURL is the base of consultation links, e.g. "https://consult.clinic.example";
	// "" means http://<server.public_host or relay IP>:<http.listen port>.
	PublicURL string `mapstructure:"public_url" yaml:"public_url"`
	// ICEURLs are the ICE server URLs (stun:, turn:, turns:) that /v1/ice-servers and rooms
	// hand out instead of this node's own listeners: required for server.role signaling, and
	// the fallback when the cluster registry cannot be read. Empty: this node's listeners.
	ICEURLs []string `mapstructure:"ice_urls" yaml:"ice_urls"`
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
	// DrainTimeout bounds a drain (SIGTERM): Ferry exits when the last allocation ends or
	// this long after the drain began, whichever comes first; 0 stops at once. At most 24h.
	DrainTimeout time.Duration `mapstructure:"drain_timeout" yaml:"drain_timeout"`
	// ReadinessMaxUsage is the share (0-1] of relay.max_allocations, or of a relay port
	// range, in use at which /readyz answers 503 so that load balancers steer new calls
	// away before the server is full; 0 turns the check off.
	ReadinessMaxUsage float64 `mapstructure:"readiness_max_usage" yaml:"readiness_max_usage"`
	// PIDFile, when set, is where ferry serve writes its process id, for `ferry reload`
	// and `ferry drain` without an admin listener; removed at exit.
	PIDFile string `mapstructure:"pid_file" yaml:"pid_file"`
	// Role is what this node runs: RoleBoth (the relay and the signaling listener),
	// RoleRelay or RoleSignaling.
	Role string `mapstructure:"role" yaml:"role"`
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
	// SocketBuffer sizes each listener socket's receive and send buffer, at most 1GiB; 0
	// keeps the kernel default.
	SocketBuffer Size `mapstructure:"socket_buffer" yaml:"socket_buffer"`
	// NonceLifetime is how long a NONCE stays valid; then requests get 438 Stale Nonce with
	// a fresh one (RFC 8489 §9.2.4). 1 min to 24 h.
	NonceLifetime time.Duration `mapstructure:"nonce_lifetime" yaml:"nonce_lifetime"`
}

// RelaySection configures relayed transport addresses and the peer policy.
type RelaySection struct {
	// BindIP is the IPv4 address relay sockets bind to, or Auto (this host's first global
	// IPv4 address, chosen by main); IPv4-mapped forms are unmapped. Unset: no IPv4 relaying.
	BindIP AutoAddr `mapstructure:"bind_ip" yaml:"bind_ip"`
	// BindIPv6 is the IPv6 relay address; the zero Addr turns IPv6 relaying off.
	BindIPv6 netip.Addr `mapstructure:"bind_ipv6" yaml:"bind_ipv6"`
	// AdvertisedIP and AdvertisedIPv6 are the public addresses behind 1:1 NAT that
	// XOR-RELAYED-ADDRESS carries instead of the bind address; zero when not behind NAT.
	AdvertisedIP   netip.Addr `mapstructure:"advertised_ip" yaml:"advertised_ip"`
	AdvertisedIPv6 netip.Addr `mapstructure:"advertised_ipv6" yaml:"advertised_ipv6"`
	PortMin        int        `mapstructure:"port_min" yaml:"port_min"`
	PortMax        int        `mapstructure:"port_max" yaml:"port_max"`
	// AllowedPeers are peer ranges the default policy would deny that peers may be in;
	// DeniedPeers are always denied (and win). YAML takes CIDRs or bare addresses (one host).
	AllowedPeers        []netip.Prefix `mapstructure:"allowed_peers" yaml:"allowed_peers"`
	DeniedPeers         []netip.Prefix `mapstructure:"denied_peers" yaml:"denied_peers"`
	TCPAllocations      bool           `mapstructure:"tcp_allocations" yaml:"tcp_allocations"`
	StrictAddressFamily bool           `mapstructure:"strict_address_family" yaml:"strict_address_family"`
	LegacyChannels      bool           `mapstructure:"legacy_channel_numbers" yaml:"legacy_channel_numbers"`
	PacketMetrics       bool           `mapstructure:"packet_metrics" yaml:"packet_metrics"`
	// SocketBuffer sizes each UDP relay socket's receive and send buffer, at most 1GiB; 0
	// keeps the kernel default.
	SocketBuffer     Size          `mapstructure:"socket_buffer" yaml:"socket_buffer"`
	UDPGSO           bool          `mapstructure:"udp_gso" yaml:"udp_gso"`
	MaxAllocationAge time.Duration `mapstructure:"max_allocation_age" yaml:"max_allocation_age"`
	// MaxLifetime caps the LIFETIME a client may ask for (RFC 8656 §7.2); 600 s to 24 h.
	MaxLifetime         time.Duration `mapstructure:"max_lifetime" yaml:"max_lifetime"`
	MaxConnectionsPerIP int           `mapstructure:"max_connections_per_ip" yaml:"max_connections_per_ip"`
	MaxConnections      int           `mapstructure:"max_connections" yaml:"max_connections"`
	// Quotas, bandwidth caps and the pace of unauthenticated answers (README: Running a
	// public relay safely). Allocation quotas: 0 is no cap.
	MaxAllocations     int `mapstructure:"max_allocations" yaml:"max_allocations"`
	MaxAllocationsUser int `mapstructure:"max_allocations_per_user" yaml:"max_allocations_per_user"`
	MaxPermissions     int `mapstructure:"max_permissions" yaml:"max_permissions"`
	MaxChannels        int `mapstructure:"max_channels" yaml:"max_channels"`
	// Bandwidth caps in bits per second in each direction (0: no cap), and the depth of
	// their token buckets as time at the capped rate.
	BandwidthAllocation Bitrate       `mapstructure:"bandwidth_per_allocation" yaml:"bandwidth_per_allocation"`
	BandwidthUser       Bitrate       `mapstructure:"bandwidth_per_user" yaml:"bandwidth_per_user"`
	BandwidthTotal      Bitrate       `mapstructure:"bandwidth_total" yaml:"bandwidth_total"`
	BandwidthBurst      time.Duration `mapstructure:"bandwidth_burst" yaml:"bandwidth_burst"`
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
	// Environ is the environment to read (os.Environ() in ferry); its FERRY_* variables
	// override keys. Load reads no other environment.
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
