package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Roles a node may run (server.role).
const (
	RoleBoth      = "both"      // the relay and the signaling HTTP listener (the default)
	RoleRelay     = "relay"     // the TURN relay only: no signaling HTTP listener
	RoleSignaling = "signaling" // the signaling HTTP listener only: no TURN listener, no relay
)

// RunsRelay reports whether server.role includes the TURN relay.
func (f *File) RunsRelay() bool { return f.Server.Role != RoleSignaling }

// RunsSignaling reports whether server.role includes the signaling HTTP listener (when
// http.listen is set).
func (f *File) RunsSignaling() bool { return f.Server.Role != RoleRelay }

// ClusterSection turns on clustering over Redis: the relay registry behind the ICE endpoint,
// rooms shared by signaling instances, and data-subject requests that reach every node.
type ClusterSection struct {
	// RedisURL is redis://host:port/db or rediss://host:port/db (TLS); "" turns clustering
	// off. It carries no password: that comes from RedisPasswordFile.
	RedisURL string `mapstructure:"redis_url" yaml:"redis_url"`
	// RedisPasswordFile holds the Redis password (AUTH) on its first line; "" for none.
	RedisPasswordFile string `mapstructure:"redis_password_file" yaml:"redis_password_file"`
	// RedisPassword is RedisPasswordFile's password once read. Never logged or printed.
	RedisPassword string `mapstructure:"-" yaml:"-"`
	// NodeID names this node in the registry (1-64 of A-Z a-z 0-9 . _ -); "" means the host
	// name.
	NodeID string `mapstructure:"node_id" yaml:"node_id"`
	// Region is the region hint (/v1/ice-servers?region=) that picks this relay; "" for none.
	Region string `mapstructure:"region" yaml:"region"`
	// HeartbeatInterval is how often a relay writes its entry; HeartbeatTTL how long the
	// entry lives without a new one (at least twice the interval).
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval" yaml:"heartbeat_interval"`
	HeartbeatTTL      time.Duration `mapstructure:"heartbeat_ttl" yaml:"heartbeat_ttl"`
	// AdminURL is how `ferry logs --cluster` reaches this node's admin listener, e.g.
	// http://10.0.0.5:9641; "" means http://<admin.listen>, with server.public_host (or the
	// relay IP) for an unspecified host.
	AdminURL string `mapstructure:"admin_url" yaml:"admin_url"`
	// AdminTokenFile holds the token (first line, at least 32 characters) that authenticates
	// the cluster's data-subject requests on every admin listener. Required with RedisURL.
	AdminTokenFile string `mapstructure:"admin_token_file" yaml:"admin_token_file"`
	// AdminToken is AdminTokenFile's token once read. Never logged or printed.
	AdminToken string `mapstructure:"-" yaml:"-"`
}

// Enabled reports whether clustering is on (cluster.redis_url is set).
func (c ClusterSection) Enabled() bool { return c.RedisURL != "" }

// minAdminTokenLen is the shortest cluster admin token taken.
const minAdminTokenLen = 32

// ICEURL is an ICE server URL of http.ice_urls: stun:host:port, turn:host:port?transport=udp|tcp
// or turns:host:port?transport=tcp (RFC 7064, RFC 7065).
type ICEURL struct {
	Scheme    string // stun, turn or turns
	Host      string // a host name or an IP address (IPv6 without brackets)
	Port      int
	Transport string // udp, tcp or tls (turns:); "" for stun:
}

// ParseICEURL parses a stun:, turn: or turns: URL. A missing port is 3478 (5349 for turns:)
// and a missing transport udp for turn: (RFC 7065 §3).
func ParseICEURL(s string) (ICEURL, error) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || scheme != "stun" && scheme != "turn" && scheme != "turns" {
		return ICEURL{}, fmt.Errorf("%q is not a stun:, turn: or turns: URL", s)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	u := ICEURL{Scheme: scheme, Port: 3478}
	if scheme == "turns" {
		u.Port = 5349
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	} else if u.Port, err = strconv.Atoi(port); err != nil || u.Port < 1 || u.Port > 65535 {
		return ICEURL{}, fmt.Errorf("%q: port must be 1-65535", s)
	}
	if host == "" || strings.ContainsAny(host, "/@ #") {
		return ICEURL{}, fmt.Errorf("%q: no host", s)
	}
	u.Host = host
	q, err := url.ParseQuery(query)
	if err != nil || len(q) > 1 || len(q) == 1 && !q.Has("transport") {
		return ICEURL{}, fmt.Errorf("%q: the only parameter is ?transport=udp or ?transport=tcp", s)
	}
	t := q.Get("transport")
	switch {
	case scheme == "stun" && t != "":
		return ICEURL{}, fmt.Errorf("%q: stun: takes no transport", s)
	case scheme == "turn" && (t == "" || t == "udp"):
		u.Transport = "udp"
	case scheme == "turn" && t == "tcp":
		u.Transport = "tcp"
	case scheme == "turns" && (t == "" || t == "tcp"):
		u.Transport = "tls"
	case scheme != "stun":
		return ICEURL{}, fmt.Errorf("%q: transport must be udp or tcp (turns: tcp)", s)
	}
	return u, nil
}

// ICEURLs parses http.ice_urls (validated by Load).
func (f *File) ICEURLs() []ICEURL {
	var out []ICEURL
	for _, s := range f.HTTP.ICEURLs {
		if u, err := ParseICEURL(s); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// resolveCluster reads cluster.redis_password_file and cluster.admin_token_file.
func (f *File) resolveCluster(p *problems) {
	c := &f.Cluster
	read := func(key, path string) string {
		if path == "" {
			return ""
		}
		data, err := os.ReadFile(path)
		if err != nil {
			p.add(key, "%v", err)
			return ""
		}
		line, _, _ := strings.Cut(string(data), "\n")
		if line = strings.TrimSpace(line); line == "" {
			p.add(key, "%s holds nothing on its first line", path)
		}
		return line
	}
	c.RedisPassword = read("cluster.redis_password_file", c.RedisPasswordFile)
	c.AdminToken = read("cluster.admin_token_file", c.AdminTokenFile)
	if c.AdminToken != "" && len(c.AdminToken) < minAdminTokenLen {
		p.add("cluster.admin_token_file", "the token is shorter than %d characters (make one with: ferry secret new)", minAdminTokenLen)
	}
}

// validateRole checks server.role and what each role needs.
func (f *File) validateRole(p *problems) {
	switch f.Server.Role {
	case RoleBoth, RoleRelay:
	case RoleSignaling:
		if f.HTTP.Listen == "" {
			p.addFor("server.role", []string{"http.listen"}, "signaling needs http.listen")
		}
		if len(f.HTTP.ICEURLs) == 0 {
			p.addFor("server.role", []string{"http.ice_urls"},
				"signaling runs no relay: list the relays' URLs in http.ice_urls (handed out without the cluster registry, and when Redis cannot be read)")
		}
	default:
		p.add("server.role", "%q is not both, relay or signaling", f.Server.Role)
	}
	for _, s := range f.HTTP.ICEURLs {
		if _, err := ParseICEURL(s); err != nil {
			p.add("http.ice_urls", "%v", err)
		}
	}
}

// validateCluster checks the cluster section.
func (f *File) validateCluster(p *problems) {
	c := f.Cluster
	if !c.Enabled() {
		return
	}
	u, err := url.Parse(c.RedisURL)
	switch {
	case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "":
		p.add("cluster.redis_url", "%q is not a URL like redis://redis.internal:6379/0 or rediss://...", redactURL(c.RedisURL))
	case u.User != nil:
		if _, has := u.User.Password(); has {
			p.add("cluster.redis_url", "holds a password: put it in cluster.redis_password_file instead")
		}
	case u.RawQuery != "":
		p.add("cluster.redis_url", "takes no parameters")
	}
	if !validName(c.NodeID, true) {
		p.add("cluster.node_id", "%q: 1-64 characters of A-Z a-z 0-9 . _ -", c.NodeID)
	}
	if !validName(c.Region, true) {
		p.add("cluster.region", "%q: 1-64 characters of A-Z a-z 0-9 . _ -", c.Region)
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.HeartbeatInterval > time.Minute {
		p.add("cluster.heartbeat_interval", "must be 100ms to 1m, got %s", c.HeartbeatInterval)
	} else if c.HeartbeatTTL < 2*c.HeartbeatInterval || c.HeartbeatTTL > 10*time.Minute {
		p.addFor("cluster.heartbeat_ttl", []string{"cluster.heartbeat_interval"},
			"must be at least twice cluster.heartbeat_interval (%s) and at most 10m, got %s", c.HeartbeatInterval, c.HeartbeatTTL)
	}
	if a := c.AdminURL; a != "" {
		au, err := url.Parse(a)
		if err != nil || (au.Scheme != "http" && au.Scheme != "https") || au.Host == "" || (au.Path != "" && au.Path != "/") ||
			au.User != nil || au.RawQuery != "" {
			p.add("cluster.admin_url", "%q is not a URL like http://10.0.0.5:9641", a)
		}
	}
	if c.AdminTokenFile == "" {
		p.add("cluster.admin_token_file", "required with cluster.redis_url: ferry logs --cluster authenticates with it on every node (make one with: ferry secret new)")
	}
	if f.Admin.Listen == "" {
		p.addFor("cluster.redis_url", []string{"admin.listen"}, "needs admin.listen: data-subject requests reach every node through its admin listener")
	}
}

// validName reports whether s is 1-64 characters of A-Z a-z 0-9 . _ - (or empty, if emptyOK).
func validName(s string, emptyOK bool) bool {
	if s == "" {
		return emptyOK
	}
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ValidNodeID reports whether s can be a cluster.node_id.
func ValidNodeID(s string) bool { return validName(s, false) }

// redactURL drops the user information of a URL for messages.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("<redacted>")
		return u.String()
	}
	return s
}
