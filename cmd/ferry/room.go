package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/ferryrelay/ferry/signaling/web"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// roomKeyFileName is the generated room signing key in the data directory.
const roomKeyFileName = "room-signing-key"

func newRoomCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "room", Short: "Consultation rooms"}
	cmd.AddCommand(newRoomCreateCmd())
	return cmd
}

func newRoomCreateCmd() *cobra.Command {
	var from, until, hostName string
	var ttl time.Duration
	var maxGuests int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [--valid-from T] [--valid-until T | --ttl 2h] [--json]",
		Short: "Create a consultation room: print its host and guest links",
		Long: "Mint a room's host and guest links offline, from the configured (or generated) room\n" +
			"signing key, as POST /v1/rooms does. Times are RFC 3339 (2026-11-29T14:00:00Z).\n" +
			"The links hold the token in their fragment (#t=...): send the guest link to the patient.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			spec := signaling.RoomSpec{TTL: ttl, HostName: hostName, MaxGuests: maxGuests}
			for _, t := range []struct {
				flag, in string
				out      *time.Time
			}{{"--valid-from", from, &spec.ValidFrom}, {"--valid-until", until, &spec.ValidUntil}} {
				if t.in == "" {
					continue
				}
				if *t.out, err = time.Parse(time.RFC3339, t.in); err != nil {
					return fmt.Errorf("room: %s: %q is not an RFC 3339 time like 2026-11-29T14:00:00Z", t.flag, t.in)
				}
			}
			tokens, err := offlineRoomTokens(f)
			if err != nil {
				return err
			}
			links, err := signaling.CreateRoom(tokens, linkPolicy(f), spec, time.Now())
			if err != nil {
				return fmt.Errorf("room: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, links)
			}
			fmt.Fprintf(out, "room:        %s\nvalid:       %s to %s\nhost link:   %s\nguest link:  %s\n",
				links.Room, links.ValidFrom.Format(time.RFC3339), links.ValidUntil.Format(time.RFC3339),
				links.Links.Host, links.Links.Guest)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "valid-from", "", "when the room opens (RFC 3339; default now)")
	fl.StringVar(&until, "valid-until", "", "when the room ends (RFC 3339)")
	fl.DurationVar(&ttl, "ttl", 0, "how long the room is open (default rooms.default_ttl, at most rooms.max_ttl)")
	fl.StringVar(&hostName, "host-name", "", "the host's display name, shown to guests")
	fl.IntVar(&maxGuests, "max-guests", 0, "guests admitted at once (default: rooms.limits.participants - 1)")
	fl.BoolVar(&asJSON, "json", false, "print the POST /v1/rooms JSON")
	cmd.MarkFlagsMutuallyExclusive("valid-until", "ttl")
	config.AddFlags(fl)
	return cmd
}

// ensureRoomKeys returns rooms.signing_keys, or the key kept in the data directory,
// generated on first use (like the TURN secret).
func ensureRoomKeys(f *config.File) (keys []string, path string, generated bool, err error) {
	if len(f.Rooms.SigningKeys) > 0 {
		return f.Rooms.SigningKeys, "", false, nil
	}
	k, path, generated, err := ensureKeyFile(f, roomKeyFileName, auth.MinRoomKeyLen)
	if err != nil {
		return nil, path, false, fmt.Errorf("rooms: %w", err)
	}
	return []string{k}, path, generated, nil
}

// publicURL is http.public_url, or http://<public host>:<http.listen port>.
func publicURL(f *config.File) string {
	if f.HTTP.PublicURL != "" {
		return strings.TrimRight(f.HTTP.PublicURL, "/")
	}
	bind4, _, adv4, _ := relayIPs(f, func(string) {})
	host := publicHost(f, bind4, adv4)
	_, port, _ := net.SplitHostPort(f.HTTP.Listen)
	scheme := "http"
	if f.HTTP.TLSCertFile != "" {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}).String()
}

func linkPolicy(f *config.File) signaling.LinkPolicy {
	return signaling.LinkPolicy{Base: publicURL(f), DefaultTTL: f.Rooms.DefaultTTL, MaxTTL: f.Rooms.MaxTTL,
		MaxGuests: f.Rooms.Limits.MaxGuests}
}

// roomsConfig maps the rooms section onto the signaling handler's; nil when rooms are off.
// With a cluster, rooms live in Redis (cluster.Rooms), else in memory.
func roomsConfig(f *config.File, reg prometheus.Registerer, log *slog.Logger, cn *clusterNode) (*signaling.RoomsConfig, error) {
	r := f.Rooms
	if !r.Enabled {
		return nil, nil
	}
	keys, path, generated, err := ensureRoomKeys(f)
	if err != nil {
		return nil, err
	}
	if generated {
		hint := "ferry room create"
		if f.Server.DataDir != "" {
			dir, _ := filepath.Abs(filepath.Dir(path))
			hint += " --data-dir " + dir
		}
		log.Info("generated a room signing key; create a consultation with: "+hint, "file", path)
	}
	tokens, err := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: keys})
	if err != nil {
		return nil, err
	}
	l := r.Limits
	rcfg := signaling.MemoryRoomsConfig{NoWaitingRoom: !r.WaitingRoom,
		ReconnectGrace: r.ReconnectGrace, Participants: l.Participants, Waiting: l.Waiting,
		MaxGuests: l.MaxGuests, MaxRooms: l.Rooms, Registerer: reg}
	var rooms signaling.Rooms
	if cn != nil {
		rooms, err = cn.newRooms(rcfg, log)
	} else {
		rooms, err = signaling.NewMemoryRooms(rcfg)
	}
	if err != nil {
		return nil, err
	}
	var page *web.Page
	if r.Page.Enabled {
		if page, err = web.New(web.Config{MaxFileBytes: int64(r.Page.MaxFileSize)}); err != nil {
			return nil, err
		}
	}
	p := linkPolicy(f)
	// Pages on these origins may open the WebSocket (besides the request's own host).
	origins := append([]string{p.Base}, f.HTTP.AllowedOrigins...)
	return &signaling.RoomsConfig{Tokens: tokens, Rooms: rooms, PublicURL: p.Base, DefaultTTL: r.DefaultTTL,
		MaxTTL: r.MaxTTL, MaxGuests: l.MaxGuests, CredentialTTL: r.CredentialTTL, RefreshBefore: r.CredentialRefresh,
		IdleTimeout: r.IdleTimeout, PingInterval: r.PingInterval, MaxMessageBytes: l.MessageBytes,
		MessageRate: l.MessageRate, MessageBurst: l.MessageBurst, ConnectionsPerIP: l.ConnectionsPerIP,
		OriginPatterns: origins, Logger: log, Page: page}, nil
}

// offlineRoomTokens signs room and check links from the configuration's signing keys (or the
// data directory's generated one), as ferry room create and ferry check-link do without a
// running server.
func offlineRoomTokens(f *config.File) (*auth.RoomTokens, error) {
	keys, _, _, err := ensureRoomKeys(f)
	if err != nil {
		return nil, err
	}
	return auth.NewRoomTokens(auth.RoomTokensConfig{Keys: keys})
}

// printJSON writes v as indented JSON, the commands' --json output.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
