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
)

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
