package config

import (
	"net/url"
	"os"
	"strings"
	"time"
)

// RoomsSection configures consultation rooms (POST /v1/rooms, ferry room create and the
// ferry.v1 WebSocket).
type RoomsSection struct {
	// Enabled serves rooms on the signaling HTTP listener.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// SigningKeys sign room tokens (HS256): the first signs, all verify. Never logged.
	// Empty (and no file): ferry serve generates one in the data directory.
	SigningKeys     []string `mapstructure:"signing_keys" yaml:"signing_keys"`
	SigningKeysFile string   `mapstructure:"signing_keys_file" yaml:"signing_keys_file"`
	// WaitingRoom makes guests wait until a host admits them.
	WaitingRoom bool `mapstructure:"waiting_room" yaml:"waiting_room"`
	// ReconnectGrace keeps a dropped participant's place this long.
	ReconnectGrace time.Duration `mapstructure:"reconnect_grace" yaml:"reconnect_grace"`
	// DefaultTTL is a new room's validity when none is asked for; MaxTTL the longest.
	DefaultTTL time.Duration `mapstructure:"default_ttl" yaml:"default_ttl"`
	MaxTTL     time.Duration `mapstructure:"max_ttl" yaml:"max_ttl"`
	// CredentialTTL is the lifetime of participants' TURN credentials; a fresh set is
	// pushed CredentialRefresh before they expire.
	CredentialTTL     time.Duration `mapstructure:"credential_ttl" yaml:"credential_ttl"`
	CredentialRefresh time.Duration `mapstructure:"credential_refresh" yaml:"credential_refresh"`
	// IdleTimeout closes a connection that sent nothing this long; PingInterval is how often
	// Ferry pings (an unanswered ping marks the connection dead).
	IdleTimeout  time.Duration `mapstructure:"idle_timeout" yaml:"idle_timeout"`
	PingInterval time.Duration `mapstructure:"ping_interval" yaml:"ping_interval"`
	Limits       RoomLimits    `mapstructure:"limits" yaml:"limits"`
	Page         RoomPage      `mapstructure:"page" yaml:"page"`
}

// RoomPage configures the consultation page served at /r/{room}.
type RoomPage struct {
	// Enabled serves the page (and its assets under /assets/) on the signaling listener.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// MaxFileSize is the largest file participants may send each other over the page's data
	// channel ("100MiB", at most 4GiB); the page refuses larger ones before sending a byte.
	MaxFileSize Size `mapstructure:"max_file_size" yaml:"max_file_size"`
}

// maxFileSizeCap bounds rooms.page.max_file_size: browsers keep a received file as a Blob.
const maxFileSizeCap = 4 * GiB

// RoomLimits bound rooms and their connections.
type RoomLimits struct {
	Participants     int     `mapstructure:"participants" yaml:"participants"` // admitted at once, hosts included
	Waiting          int     `mapstructure:"waiting" yaml:"waiting"`           // guests waiting at once
	MaxGuests        int     `mapstructure:"max_guests" yaml:"max_guests"`     // cap of a room's maxGuests
	Rooms            int     `mapstructure:"rooms" yaml:"rooms"`               // rooms held at once
	ConnectionsPerIP int     `mapstructure:"connections_per_ip" yaml:"connections_per_ip"`
	MessageBytes     int64   `mapstructure:"message_bytes" yaml:"message_bytes"`
	MessageRate      float64 `mapstructure:"message_rate" yaml:"message_rate"` // per second per connection
	MessageBurst     int     `mapstructure:"message_burst" yaml:"message_burst"`
}

// minRoomKeyLen mirrors auth.MinRoomKeyLen (config imports nothing of ours).
const minRoomKeyLen = 32

// resolveRoomKeys reads rooms.signing_keys_file (one key per line; blank lines and lines
// starting with # are ignored).
func (f *File) resolveRoomKeys(p *problems) {
	r := &f.Rooms
	if r.SigningKeysFile == "" {
		return
	}
	if len(r.SigningKeys) > 0 {
		p.add("rooms.signing_keys_file", "set rooms.signing_keys or rooms.signing_keys_file, not both")
		return
	}
	data, err := os.ReadFile(r.SigningKeysFile)
	if err != nil {
		p.add("rooms.signing_keys_file", "%v", err)
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			r.SigningKeys = append(r.SigningKeys, line)
		}
	}
	if len(r.SigningKeys) == 0 {
		p.add("rooms.signing_keys_file", "%s holds no key", r.SigningKeysFile)
	}
}

// validateRooms checks the rooms section and http.public_url.
func (f *File) validateRooms(p *problems) {
	r := f.Rooms
	if u := f.HTTP.PublicURL; u != "" {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.RawQuery != "" ||
			pu.Fragment != "" || pu.User != nil {
			p.add("http.public_url", "%q is not a URL like https://consult.clinic.example", u)
		}
	}
	for i, k := range r.SigningKeys {
		if len(k) < minRoomKeyLen {
			p.add("rooms.signing_keys", "key %d is shorter than %d characters", i+1, minRoomKeyLen)
		}
	}
	positive := []struct {
		key string
		v   time.Duration
	}{{"reconnect_grace", r.ReconnectGrace}, {"default_ttl", r.DefaultTTL}, {"max_ttl", r.MaxTTL},
		{"credential_ttl", r.CredentialTTL}, {"credential_refresh", r.CredentialRefresh},
		{"idle_timeout", r.IdleTimeout}, {"ping_interval", r.PingInterval}}
	for _, d := range positive {
		if d.v <= 0 {
			p.add("rooms."+d.key, "must be positive, got %s", d.v)
		}
	}
	if r.DefaultTTL > r.MaxTTL {
		p.addFor("rooms.default_ttl", []string{"rooms.max_ttl"}, "%s is longer than rooms.max_ttl (%s)", r.DefaultTTL, r.MaxTTL)
	}
	if r.MaxTTL > 31*24*time.Hour {
		p.add("rooms.max_ttl", "at most 744h (31 days), got %s", r.MaxTTL)
	}
	if r.CredentialTTL > f.Auth.MaxTTL {
		p.addFor("rooms.credential_ttl", []string{"auth.max_ttl"}, "%s is longer than auth.max_ttl (%s)", r.CredentialTTL, f.Auth.MaxTTL)
	}
	if r.CredentialRefresh >= r.CredentialTTL {
		p.addFor("rooms.credential_refresh", []string{"rooms.credential_ttl"}, "%s must be shorter than rooms.credential_ttl (%s): the push comes that long before expiry", r.CredentialRefresh, r.CredentialTTL)
	}
	if r.PingInterval > r.IdleTimeout {
		p.addFor("rooms.ping_interval", []string{"rooms.idle_timeout"}, "%s is longer than rooms.idle_timeout (%s)", r.PingInterval, r.IdleTimeout)
	}
	l := r.Limits
	for _, n := range []struct {
		key string
		v   int64
		min int64
	}{{"participants", int64(l.Participants), 2}, {"waiting", int64(l.Waiting), 1}, {"max_guests", int64(l.MaxGuests), 1},
		{"rooms", int64(l.Rooms), 1}, {"connections_per_ip", int64(l.ConnectionsPerIP), 1},
		{"message_bytes", l.MessageBytes, 4096}, {"message_burst", int64(l.MessageBurst), 1}} {
		if n.v < n.min {
			p.add("rooms.limits."+n.key, "must be at least %d, got %d", n.min, n.v)
		}
	}
	if l.MessageRate <= 0 {
		p.add("rooms.limits.message_rate", "must be positive, got %v", l.MessageRate)
	}
	if s := r.Page.MaxFileSize; s <= 0 || s > maxFileSizeCap {
		p.add("rooms.page.max_file_size", "must be 1 byte to 4GiB, got %s", s)
	}
	if l.MessageBytes > 1<<20 {
		p.add("rooms.limits.message_bytes", "at most 1048576, got %d", l.MessageBytes)
	}
}
