package config

import (
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Validate checks every value and returns every problem, one per mistake, each naming the
// setting at fault ("relay.port_min: ..."). Each section (or concern that spans sections)
// has its own step below; a new section adds its step to the list.
func (f *File) Validate() []error {
	var p problems
	for _, step := range []func(*File, *problems){
		(*File).validateServer,
		(*File).validateLog,
		(*File).validateTURN,
		(*File).validateListeners,
		(*File).validateRelayAddresses,
		(*File).validateRelay,
		(*File).validateLimits,
		(*File).validateAuth,
		(*File).validateHTTP,
		(*File).validateAPI,
		(*File).validateAdmin,
		(*File).validateAllocLog,
		(*File).validateRuntime,
		(*File).validateRooms,
		(*File).validateRole,
		(*File).validateCluster,
	} {
		step(f, &p)
	}
	return p.list
}

// problem is one mistake in the configuration.
type problem struct {
	key     string   // the setting (or section) the message is about: "relay.port_min", "turn"
	related []string // other settings the check read
	msg     string   // what is wrong
}

func (p *problem) Error() string { return p.key + ": " + p.msg }

// keys returns the settings the problem is about, key first.
func (p *problem) keys() []string { return append([]string{p.key}, p.related...) }

// problems collects what the validation steps find.
type problems struct{ list []error }

// add records a problem about the setting key.
func (p *problems) add(key, format string, args ...any) {
	p.list = append(p.list, &problem{key: key, msg: fmt.Sprintf(format, args...)})
}

// addFor records a problem about key that the settings in related take part in (a range, a
// pair of files): Load leaves it out when one of them could not be read, which it reports.
func (p *problems) addFor(key string, related []string, format string, args ...any) {
	p.list = append(p.list, &problem{key: key, related: related, msg: fmt.Sprintf(format, args...)})
}

func (f *File) validateServer(p *problems) {
	s := f.Server
	if h := s.PublicHost; h != "" && (strings.ContainsAny(h, "/?#@ :") && !isIPv6(h)) {
		p.add("server.public_host", "%q is not a host name or IP address", h)
	}
	if d := s.DrainTimeout; d < 0 || d > 24*time.Hour {
		p.add("server.drain_timeout", "must be 0 (no drain) to 24h, got %s", d)
	}
	if u := s.ReadinessMaxUsage; u < 0 || u > 1 || u != u {
		p.add("server.readiness_max_usage", "must be a share from 0 (off) to 1, e.g. 0.9, got %v", u)
	}
}

func (f *File) validateLog(p *problems) {
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, f.Log.Level) {
		p.add("log.level", "%q is not debug, info, warn or error", f.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, f.Log.Format) {
		p.add("log.format", "%q is not text or json", f.Log.Format)
	}
}

func (f *File) validateTURN(p *problems) {
	t := f.TURN
	switch r := t.Realm; {
	case r == "" || strings.IndexFunc(r, unicode.IsControl) >= 0 || !utf8.ValidString(r):
		p.add("turn.realm", "must be printable text, got %q", r)
	case len(r) > MaxRealmBytes:
		p.add("turn.realm", "%q is %d bytes, at most %d: a longer realm makes the 401 challenge to a browser's first Allocate (28 bytes) more than twice its size, which Ferry does not send over UDP; REST credentials do not depend on the realm", r, len(r), MaxRealmBytes)
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"turn.udp_listen", t.UDPListen}, {"turn.tcp_listen", t.TCPListen}, {"turn.tls_listen", t.TLSListen}} {
		for _, a := range l.list {
			if err := checkListen(a); err != nil {
				p.add(l.key, "%q: %v", a, err)
			}
		}
	}
	if len(t.UDPListen)+len(t.TCPListen)+len(t.TLSListen) == 0 && f.RunsRelay() {
		p.addFor("turn", []string{"turn.udp_listen", "turn.tcp_listen", "turn.tls_listen"},
			"no listeners: set udp_listen, tcp_listen or tls_listen")
	}
	if d := t.NonceLifetime; d < time.Minute || d > 24*time.Hour {
		p.add("turn.nonce_lifetime", "must be 1m to 24h, got %s", d)
	}
	if n := t.UDPSockets; n < 0 || n > 64 {
		p.add("turn.udp_sockets", "%d is not 0 (one per CPU) to 64", n)
	}
	if t.SocketBuffer > maxSocketBuffer {
		p.add("turn.socket_buffer", "%s is more than 1GiB", t.SocketBuffer)
	}
	if len(t.TLSListen) > 0 && (t.TLSCertFile == "" || t.TLSKeyFile == "") {
		p.addFor("turn.tls_listen", []string{"turn.tls_cert_file", "turn.tls_key_file"},
			"needs turn.tls_cert_file and turn.tls_key_file")
	}
	checkKeyPair(p, "turn", t.TLSCertFile, t.TLSKeyFile)
}

// validateListeners finds two listeners on one address. One TCP port (443) may carry
// turn.tls_listen together with turn.tcp_listen, http.listen or both: Ferry tells the
// connections apart by their first bytes (internal/portmux). HTTP shares a port only
// through TLS, so http.listen may name a turn.tcp_listen address only when turn.tls_listen
// names it too.
func (f *File) validateListeners(p *problems) {
	seen := map[string][]string{} // "network address" -> the keys naming it, in order
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
			keys := seen[k]
			if len(keys) > 0 && !mayShare(keys, l.key) {
				hint := ""
				if l.key == "http.listen" && slices.Equal(keys, []string{"turn.tcp_listen"}) {
					hint = " (HTTP shares a port with TURN only through TLS: add the address to turn.tls_listen too)"
				}
				other := keys[len(keys)-1]
				p.addFor(l.key, []string{other}, "%q is also in %s%s", a, other, hint)
			}
			seen[k] = append(keys, l.key)
		}
	}
}

// mayShare reports whether key may name an address that the settings in before already
// name: TURN over TLS with TURN over TCP, and then HTTPS with either pair.
func mayShare(before []string, key string) bool {
	switch key {
	case "turn.tls_listen":
		return slices.Equal(before, []string{"turn.tcp_listen"})
	case "http.listen":
		return slices.Equal(before, []string{"turn.tls_listen"}) ||
			slices.Equal(before, []string{"turn.tcp_listen", "turn.tls_listen"})
	}
	return false
}

// validateRelayAddresses checks the addresses relay sockets bind to and advertise.
func (f *File) validateRelayAddresses(p *problems) {
	r := f.Relay
	checkIP := func(key string, ip netip.Addr, v6 bool) {
		switch {
		case !ip.IsValid():
		case v6 && !ip.Is6():
			p.add(key, "%s is not an IPv6 address", ip)
		case !v6 && !ip.Is4():
			p.add(key, "%s is not an IPv4 address", ip)
		case ip.IsUnspecified() || ip.IsMulticast():
			p.add(key, "%s cannot be a relayed address", ip)
		}
	}
	checkIP("relay.bind_ip", r.BindIP.Addr, false)
	checkIP("relay.bind_ipv6", r.BindIPv6, true)
	checkIP("relay.advertised_ip", r.AdvertisedIP, false)
	checkIP("relay.advertised_ipv6", r.AdvertisedIPv6, true)
	if !r.BindIP.IsSet() && !r.BindIPv6.IsValid() && f.RunsRelay() {
		p.addFor("relay", []string{"relay.bind_ip", "relay.bind_ipv6"}, "bind_ip and bind_ipv6 are both empty: nothing to relay from")
	}
	if r.AdvertisedIPv6.IsValid() && !r.BindIPv6.IsValid() {
		p.addFor("relay.advertised_ipv6", []string{"relay.bind_ipv6"}, "needs relay.bind_ipv6")
	}
}

// validateRelay checks the relay's port range, peer policy, caps and buffers.
func (f *File) validateRelay(p *problems) {
	r := f.Relay
	if r.PortMin < 1024 || r.PortMax > 65535 || r.PortMin > r.PortMax {
		p.addFor("relay", []string{"relay.port_min", "relay.port_max"},
			"port range %d-%d must lie within 1024-65535 with port_min <= port_max", r.PortMin, r.PortMax)
	}
	if r.SocketBuffer > maxSocketBuffer {
		p.add("relay.socket_buffer", "%s is more than 1GiB", r.SocketBuffer)
	}
	if r.MaxAllocationAge <= 0 {
		p.add("relay.max_allocation_age", "must be positive, got %s", r.MaxAllocationAge)
	}
	if r.MaxLifetime < 10*time.Minute || r.MaxLifetime > 24*time.Hour {
		p.add("relay.max_lifetime", "must be 10m (the default lifetime) to 24h, got %s", r.MaxLifetime)
	}
	if r.MaxConnectionsPerIP < 1 {
		p.add("relay.max_connections_per_ip", "must be positive, got %d", r.MaxConnectionsPerIP)
	}
	if r.MaxConnections < 1 {
		p.add("relay.max_connections", "must be positive, got %d", r.MaxConnections)
	}
}

// validateLimits checks the quotas, bandwidth caps and the pace of unauthenticated answers.
func (f *File) validateLimits(p *problems) {
	r := f.Relay
	if r.MaxAllocations < 0 {
		p.add("relay.max_allocations", "cannot be negative (0 is no cap), got %d", r.MaxAllocations)
	}
	if r.MaxAllocationsUser < 0 {
		p.add("relay.max_allocations_per_user", "cannot be negative (0 is no cap), got %d", r.MaxAllocationsUser)
	}
	for _, q := range []struct {
		key string
		v   int
	}{{"relay.max_permissions", r.MaxPermissions}, {"relay.max_channels", r.MaxChannels}} {
		if q.v < 1 || q.v > 4096 {
			p.add(q.key, "must be 1-4096, got %d", q.v)
		}
	}
	for _, c := range []struct {
		key string
		v   Bitrate
	}{{"relay.bandwidth_per_allocation", r.BandwidthAllocation}, {"relay.bandwidth_per_user", r.BandwidthUser},
		{"relay.bandwidth_total", r.BandwidthTotal}} {
		if c.v != 0 && c.v < 64*Kbit {
			p.add(c.key, "%s is less than 64kbit, too little for audio (0 is no cap)", c.v)
		}
	}
	if d := r.BandwidthBurst; d < 10*time.Millisecond || d > 10*time.Second {
		p.add("relay.bandwidth_burst", "must be 10ms to 10s, got %s", d)
	}
	if r.UnauthBurst < 1 && r.UnauthRate >= 0 {
		p.addFor("relay.unauth_burst", []string{"relay.unauth_rate"}, "must be at least 1 (a negative unauth_rate turns pacing off), got %d", r.UnauthBurst)
	}
	if r.UnauthRate == 0 {
		p.add("relay.unauth_rate", "0 would answer no client; give answers per second, or a negative rate for no limit")
	}
}

func (f *File) validateAuth(p *problems) {
	a := f.Auth
	maxOK := a.MaxTTL > 0 && a.MaxTTL <= 7*24*time.Hour
	if !maxOK {
		p.add("auth.max_ttl", "must be in (0, 168h], got %s", a.MaxTTL)
	}
	switch {
	case a.DefaultTTL <= 0:
		p.add("auth.default_ttl", "must be positive, got %s", a.DefaultTTL)
	case maxOK && a.DefaultTTL > a.MaxTTL:
		p.addFor("auth.default_ttl", []string{"auth.max_ttl"}, "%s is longer than auth.max_ttl (%s)", a.DefaultTTL, a.MaxTTL)
	}
	if a.ClockSkew < 0 || a.ClockSkew > time.Hour {
		p.add("auth.clock_skew", "must be in [0, 1h], got %s", a.ClockSkew)
	}
	for i, s := range a.Secrets {
		if len(s) < 16 {
			p.add(fmt.Sprintf("auth.secrets[%d]", i), "shorter than 16 characters")
		}
	}
	names := map[string]bool{}
	for i, u := range a.StaticUsers {
		key := fmt.Sprintf("auth.static_users[%d]", i)
		if u.Name == "" || u.Password == "" {
			p.add(key, "name and password are required")
		}
		if names[u.Name] {
			p.add(key, "duplicate name")
		}
		if strings.Contains(u.Name, ":") {
			p.add(key, "a static name cannot contain ':' (reserved for REST usernames)")
		}
		if strings.IndexFunc(u.Name, unicode.IsControl) >= 0 {
			p.add(key, "the name contains a control character")
		}
		names[u.Name] = true
	}
}

func (f *File) validateHTTP(p *problems) {
	h := f.HTTP
	if h.Listen != "" {
		if err := checkListen(h.Listen); err != nil {
			p.add("http.listen", "%q: %v", h.Listen, err)
		}
	}
	if (h.TLSCertFile == "") != (h.TLSKeyFile == "") {
		p.addFor("http", []string{"http.tls_cert_file", "http.tls_key_file"}, "set both tls_cert_file and tls_key_file, or neither")
	}
	checkKeyPair(p, "http", h.TLSCertFile, h.TLSKeyFile)
	for _, o := range h.AllowedOrigins {
		if !validOrigin(o) {
			p.add("http.allowed_origins", "%q is not an origin like https://app.example.org (no wildcard, no path)", o)
		}
	}
	if h.MaxBodyBytes <= 0 {
		p.add("http.max_body_bytes", "must be positive, got %d", h.MaxBodyBytes)
	}
	if h.MaxHeaderBytes <= 0 {
		p.add("http.max_header_bytes", "must be positive, got %d", h.MaxHeaderBytes)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"read_header_timeout", h.ReadHeaderTimeout}, {"read_timeout", h.ReadTimeout}, {"write_timeout", h.WriteTimeout}, {"idle_timeout", h.IdleTimeout}} {
		if d.v <= 0 {
			p.add("http."+d.key, "must be positive, got %s", d.v)
		}
	}
}

func (f *File) validateAPI(p *problems) {
	names := map[string]bool{}
	for i, k := range f.API.Keys {
		key := fmt.Sprintf("api.keys[%d]", i)
		switch {
		case k.Name == "":
			p.add(key, "name is required")
		case names[k.Name]:
			p.add(key, "duplicate name %q", k.Name)
		}
		names[k.Name] = true
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 {
			p.add(key, "sha256 must be 64 hex digits (see ferry apikey new)")
		}
	}
	if f.API.Burst <= 0 && f.API.Rate >= 0 {
		p.addFor("api.burst", []string{"api.rate"}, "must be positive")
	}
}

func (f *File) validateAdmin(p *problems) {
	a := f.Admin.Listen
	if a == "" {
		return
	}
	if err := checkListen(a); err != nil {
		p.add("admin.listen", "%q: %v", a, err)
	} else if a == f.HTTP.Listen && !strings.HasSuffix(a, ":0") {
		p.addFor("admin.listen", []string{"http.listen"}, "must differ from http.listen: metrics never go on the public listener")
	}
}

func (f *File) validateAllocLog(p *problems) {
	a := f.AllocLog
	if !a.Enabled {
		return
	}
	switch {
	case a.Retention <= 0:
		p.add("alloclog.retention", "must be positive, got %s", a.Retention)
	case a.Retention > 48*time.Hour && !a.AllowRetentionOver48h:
		p.addFor("alloclog.retention", []string{"alloclog.allow_retention_over_48h"},
			"%s is longer than the 48h promised to patients; set alloclog.allow_retention_over_48h: true to keep records longer", a.Retention)
	}
	if a.PurgeInterval <= 0 || a.PurgeInterval > a.Retention {
		p.addFor("alloclog.purge_interval", []string{"alloclog.retention"}, "must be positive and at most the retention, got %s", a.PurgeInterval)
	}
	if a.QueueLength <= 0 {
		p.add("alloclog.queue_length", "must be positive, got %d", a.QueueLength)
	}
}

func (f *File) validateRuntime(p *problems) {
	if f.Runtime.GOGC < 0 {
		p.add("runtime.gogc", "must be positive (or 0 for the default), got %d", f.Runtime.GOGC)
	}
	if m := f.Runtime.MemoryLimit; m > 0 && m < minMemoryLimit {
		hint := ""
		if m < 64*KiB {
			hint = fmt.Sprintf(" (a number without a unit is bytes: did you mean %dMiB?)", int64(m))
		}
		p.add("runtime.memory_limit", "%s is less than 64MiB%s", m, hint)
	}
}

// MaxRealmBytes bounds turn.realm: the 401 to a 28-byte Allocate (a browser's first) is 48
// bytes plus the realm padded to 4, and stays within twice the request up to 8 bytes (C22).
const MaxRealmBytes = 8

// minMemoryLimit is the smallest runtime.memory_limit taken: below it the collector would run
// without pause (a bare "512" is bytes, not megabytes).
const minMemoryLimit = 64 * MiB

// maxSocketBuffer bounds turn.socket_buffer and relay.socket_buffer (the kernel takes an int
// and doubles it).
const maxSocketBuffer = 1 * GiB

// validOrigin accepts a serialized origin: scheme://host[:port], no path, no wildcard.
func validOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.User == nil && !strings.Contains(o, "*")
}

// checkKeyPair loads a PEM certificate and key to find a missing file, a bad PEM or a key
// that does not match, at start-up rather than at the first handshake.
func checkKeyPair(p *problems, section, cert, key string) {
	if cert == "" || key == "" {
		return
	}
	certKey, keyKey := section+".tls_cert_file", section+".tls_key_file"
	missing := false
	for _, file := range []struct{ key, path string }{{certKey, cert}, {keyKey, key}} {
		if _, err := os.Stat(file.path); err != nil {
			p.add(file.key, "%v", err)
			missing = true
		}
	}
	if missing {
		return
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		p.addFor(certKey, []string{keyKey}, "does not load with %s: %v", keyKey, err)
	}
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
