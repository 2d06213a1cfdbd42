package config

import (
	"errors"
	"fmt"
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
	// channel ("100MiB"); the page refuses larger ones before sending a byte.
	MaxFileSize string `mapstructure:"max_file_size" yaml:"max_file_size"`
}

// maxFileSizeCap bounds rooms.page.max_file_size: browsers keep a received file as a Blob.
const maxFileSizeCap = 4 << 30

// MaxFileBytes parses rooms.page.max_file_size: bytes, at most 4GiB.
func (p RoomPage) MaxFileBytes() (int64, error) {
	n, err := parseSize("rooms.page.max_file_size", p.MaxFileSize)
	if err == nil && n > maxFileSizeCap {
		err = fmt.Errorf("rooms.page.max_file_size: %q is more than 4GiB", p.MaxFileSize)
	}
	return n, err
}

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
func (f *File) resolveRoomKeys() []error {
	r := &f.Rooms
	if r.SigningKeysFile == "" {
		return nil
	}
	if len(r.SigningKeys) > 0 {
		return []error{errors.New("rooms: set signing_keys or signing_keys_file, not both")}
	}
	data, err := os.ReadFile(r.SigningKeysFile)
	if err != nil {
		return []error{fmt.Errorf("rooms.signing_keys_file: %w", err)}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			r.SigningKeys = append(r.SigningKeys, line)
		}
	}
	if len(r.SigningKeys) == 0 {
		return []error{fmt.Errorf("rooms.signing_keys_file: %s holds no key", r.SigningKeysFile)}
	}
	return nil
}

// validateRooms checks the rooms section and http.public_url, and returns every problem.
func (f *File) validateRooms() []error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	r := f.Rooms
	if u := f.HTTP.PublicURL; u != "" {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.RawQuery != "" ||
			pu.Fragment != "" || pu.User != nil {
			add("http.public_url: %q is not a URL like https://consult.clinic.example", u)
		}
	}
	for i, k := range r.SigningKeys {
		if len(k) < minRoomKeyLen {
			add("rooms.signing_keys[%d]: shorter than %d characters", i, minRoomKeyLen)
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
			add("rooms.%s: must be positive, got %s", d.key, d.v)
		}
	}
	if r.DefaultTTL > r.MaxTTL {
		add("rooms.default_ttl: %s is longer than rooms.max_ttl (%s)", r.DefaultTTL, r.MaxTTL)
	}
	if r.MaxTTL > 31*24*time.Hour {
		add("rooms.max_ttl: at most 744h (31 days), got %s", r.MaxTTL)
	}
	if r.CredentialTTL > f.Auth.MaxTTL {
		add("rooms.credential_ttl: %s is longer than auth.max_ttl (%s)", r.CredentialTTL, f.Auth.MaxTTL)
	}
	if r.CredentialRefresh >= r.CredentialTTL {
		add("rooms.credential_refresh: %s must be shorter than rooms.credential_ttl (%s): the push comes that long before expiry", r.CredentialRefresh, r.CredentialTTL)
	}
	if r.PingInterval > r.IdleTimeout {
		add("rooms.ping_interval: %s is longer than rooms.idle_timeout (%s)", r.PingInterval, r.IdleTimeout)
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
			add("rooms.limits.%s: must be at least %d, got %d", n.key, n.min, n.v)
		}
	}
	if l.MessageRate <= 0 {
		add("rooms.limits.message_rate: must be positive, got %v", l.MessageRate)
	}
	if _, err := r.Page.MaxFileBytes(); err != nil {
		p = append(p, err)
	}
	if l.MessageBytes > 1<<20 {
		add("rooms.limits.message_bytes: at most 1048576, got %d", l.MessageBytes)
	}
	return p
}
