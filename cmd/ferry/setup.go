package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/relay"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/spf13/cobra"
)

// loadConfig loads the configuration for a command: --config, FERRY_* and the command's flags.
func loadConfig(cmd *cobra.Command) (*config.File, error) {
	return config.Load(configOptions(cmd))
}

// configOptions say where a command's configuration comes from: --config, the environment
// as the command started, and its flags.
func configOptions(cmd *cobra.Command) config.Options {
	path, _ := cmd.Flags().GetString("config")
	return config.Options{Path: path, Flags: cmd.Flags(), Environ: os.Environ()}
}

// newLogger returns the process log in log.format at log.level; a reload sets the level
// through the returned LevelVar.
func newLogger(f *config.File, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	setLevel(level, f)
	opts := &slog.HandlerOptions{Level: level}
	if f.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

// setLevel sets v to log.level (validated: debug, info, warn or error).
func setLevel(v *slog.LevelVar, f *config.File) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(f.Log.Level))
	v.Set(level)
}

// dataDir returns the configured state directory or the user's state directory, created
// with mode 0700.
func dataDir(f *config.File) (string, error) {
	dir, err := dataDirPath(f)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	return dir, nil
}

// dataDirPath returns the state directory dataDir would use, without creating it.
func dataDirPath(f *config.File) (string, error) {
	dir := f.Server.DataDir
	if dir == "" {
		if x := os.Getenv("XDG_STATE_HOME"); x != "" {
			dir = filepath.Join(x, "ferry")
		} else {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("data dir: %w (set server.data_dir)", err)
			}
			dir = filepath.Join(home, ".local", "state", "ferry")
		}
	}
	return dir, nil
}

const secretFileName = "turn-secret"

// ensureSecret returns the configured secrets, or the secret kept in the data directory,
// generating it (32 random bytes) on first use. generated reports a new secret.
func ensureSecret(f *config.File) (secrets []string, path string, generated bool, err error) {
	if len(f.Auth.Secrets) > 0 {
		return f.Auth.Secrets, "", false, nil
	}
	s, path, generated, err := ensureKeyFile(f, secretFileName, 16)
	if err != nil {
		return nil, path, false, err
	}
	return []string{s}, path, generated, nil
}

// ensureKeyFile returns the key in the data directory's file name, generating it (32
// random bytes, base64url, in a 0600 file) on first use. generated reports a new key.
func ensureKeyFile(f *config.File, name string, minLen int) (key, path string, generated bool, err error) {
	dir, err := dataDir(f)
	if err != nil {
		return "", "", false, err
	}
	path = filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(data))
		if len(s) < minLen {
			return "", path, false, fmt.Errorf("key file %s is too short; delete it to generate a new one", path)
		}
		return s, path, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", path, false, fmt.Errorf("key file: %w", err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", path, false, err
	}
	s := base64.RawURLEncoding.EncodeToString(buf)
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) { // another ferry process won the race
			return ensureKeyFile(f, name, minLen)
		}
		return "", path, false, fmt.Errorf("key file: %w", err)
	}
	if _, err := fh.WriteString(s + "\n"); err != nil {
		fh.Close()
		return "", path, false, fmt.Errorf("key file: %w", err)
	}
	if err := fh.Close(); err != nil {
		return "", path, false, fmt.Errorf("key file: %w", err)
	}
	return s, path, true, nil
}

func newAuthenticator(f *config.File, secrets []string) (*auth.Authenticator, error) {
	return auth.New(authConfig(f, secrets))
}

// authConfig maps the auth section (with the resolved secrets) onto the authenticator's.
func authConfig(f *config.File, secrets []string) auth.Config {
	static := map[string]string{}
	for _, u := range f.Auth.StaticUsers {
		static[u.Name] = u.Password
	}
	return auth.Config{Secrets: secrets, StaticUsers: static, MaxTTL: f.Auth.MaxTTL, ClockSkew: f.Auth.ClockSkew}
}

// relayAddrs are Ferry's own relay addresses: bound and advertised, per family (invalid
// when not configured).
type relayAddrs struct{ bind4, bind6, adv4, adv6 netip.Addr }

// String describes them for the start-up log line (the server's addresses, published in
// every relay candidate; never a client's).
func (r relayAddrs) String() string {
	var parts []string
	for _, p := range [][2]netip.Addr{{r.bind4, r.adv4}, {r.bind6, r.adv6}} {
		switch {
		case !p[0].IsValid():
		case p[1].IsValid():
			parts = append(parts, p[0].String()+" advertised as "+p[1].String())
		default:
			parts = append(parts, p[0].String())
		}
	}
	return strings.Join(parts, ", ")
}

// checkLocal binds a UDP socket on each bind address and closes it again: an address this
// host does not have would otherwise pass every check and fail each Allocate (508).
func (r relayAddrs) checkLocal(ctx context.Context) error {
	var errs []error
	for _, k := range []struct {
		key string
		ip  netip.Addr
	}{{"relay.bind_ip", r.bind4}, {"relay.bind_ipv6", r.bind6}} {
		if !k.ip.IsValid() {
			continue
		}
		var lc net.ListenConfig
		c, err := lc.ListenPacket(ctx, "udp", netip.AddrPortFrom(k.ip, 0).String())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s is not an address of this host (%w); "+
				"bind a local address and advertise a NAT's public one with relay.advertised_ip", k.key, k.ip, err))
			continue
		}
		_ = c.Close()
	}
	return errors.Join(errs...)
}

// resolveRelayIPs resolves relay.bind_ip ("auto") and the advertised addresses.
func resolveRelayIPs(f *config.File, warn func(string)) relayAddrs {
	bind4, bind6, adv4, adv6 := relayIPs(f, warn)
	return relayAddrs{bind4, bind6, adv4, adv6}
}

// relayIPs resolves relay.bind_ip ("auto") and returns the relay's addresses (zero when
// unset). warn receives operator advice (never an address of a user).
func relayIPs(f *config.File, warn func(string)) (bind4, bind6, adv4, adv6 netip.Addr) {
	bind4, bind6, adv4, adv6 = f.Relay.BindIP.Addr, f.Relay.BindIPv6, f.Relay.AdvertisedIP, f.Relay.AdvertisedIPv6
	if f.Relay.BindIP.Auto {
		bind4 = detectIPv4()
		if bind4.IsLoopback() {
			warn("relay.bind_ip auto: no global IPv4 address on this host; relaying on 127.0.0.1 serves local clients only. Set relay.bind_ip.")
		}
	}
	// A relayed address peers on the internet cannot reach: the default peer policy's ranges
	// (private, CGNAT, loopback, documentation, ...) tell which.
	for _, a := range []struct {
		key       string
		bind, adv netip.Addr
	}{{"relay.bind_ip", bind4, adv4}, {"relay.bind_ipv6", bind6, adv6}} {
		if !a.bind.IsValid() || a.adv.IsValid() || a.bind.IsLoopback() && f.Relay.BindIP.Auto {
			continue // nothing to say, or said above
		}
		if a.bind.IsLoopback() {
			warn(a.key + " is a loopback address: only clients and peers on this host can use the relay")
		} else if reason := relay.PeerDenial(a.bind); reason != "" {
			warn(fmt.Sprintf("relayed addresses are not publicly routable (%s is in a %s range); behind NAT "+
				"set the advertised address, or peers outside this network cannot reach them", a.key, reason))
		}
	}
	return
}

// detectIPv4 returns the first global unicast IPv4 address of an up, non-loopback interface,
// preferring public over private addresses, or 127.0.0.1.
func detectIPv4() netip.Addr {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.MustParseAddr("127.0.0.1")
	}
	var private netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.Is4() || !ip.IsGlobalUnicast() {
				continue
			}
			if !ip.IsPrivate() {
				return ip
			}
			if !private.IsValid() {
				private = ip
			}
		}
	}
	if private.IsValid() {
		return private
	}
	return netip.MustParseAddr("127.0.0.1")
}

// listenNetwork picks udp4/udp6 (tcp4/tcp6) for explicit addresses, so that "0.0.0.0:3478"
// and "[::]:3478" can both be configured, and the dual-stack network for ":3478".
func listenNetwork(base, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return base
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() && !ip.Is4In6() {
		return base + "6"
	}
	return base + "4"
}

// publicHost is the host for turn: URLs: server.public_host, else the advertised or relay IP.
func publicHost(f *config.File, bind4, adv4 netip.Addr) string {
	if f.Server.PublicHost != "" {
		return f.Server.PublicHost
	}
	if adv4.IsValid() {
		return adv4.String()
	}
	return bind4.String()
}

// configuredURLs returns the ICE server URLs of the configured listeners, as /v1/ice-servers
// lists those of the running ones.
func configuredURLs(f *config.File) []signaling.URL {
	if len(f.HTTP.ICEURLs) > 0 {
		return iceURLsOf(f)
	}
	bind4, _, adv4, _ := relayIPs(f, func(string) {})
	return signaling.BuildURLs(publicHost(f, bind4, adv4), configuredPorts(f.TURN.UDPListen),
		configuredPorts(f.TURN.TCPListen), configuredPorts(f.TURN.TLSListen))
}

// configuredPorts returns the ports of listen addresses ("host:port").
func configuredPorts(addrs []string) []int {
	var out []int
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(port); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func statFile(p string) (time.Time, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
