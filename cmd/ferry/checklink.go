package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/ferryrelay/ferry/signaling/web"
	"github.com/spf13/cobra"
)

func newCheckLinkCmd() *cobra.Command {
	var ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check-link [--ttl 24h] [--json]",
		Short: "Print a link to the connection check page, for a patient or a clinic's IT department",
		Long: "Mint a link to this Ferry's /check page, signed with the room signing key (as room links\n" +
			"are). Opened in a browser, the page shows for UDP, TCP and TLS on 443 whether a relayed\n" +
			"call can reach Ferry from that network, and how long it took. The link grants nothing\n" +
			"but 10-minute TURN credentials for the page; it stops working after --ttl (at most 30\n" +
			"days) or when the signing key is rotated out. Apps mint them with POST /v1/check-links.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			tokens, err := offlineRoomTokens(f)
			if err != nil {
				return err
			}
			link, err := signaling.NewCheckLink(tokens, publicURL(f), ttl, time.Now())
			if err != nil {
				return fmt.Errorf("check-link: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, link)
			}
			fmt.Fprintf(out, "check link:  %s\nvalid until: %s\n", link.URL, link.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", signaling.DefaultCheckLinkTTL, "how long the link works (1m to 720h)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the POST /v1/check-links JSON")
	config.AddFlags(cmd.Flags())
	return cmd
}

// checkConfig maps the configuration onto the check page's: the rooms' signing keys and
// page when rooms are on, else the key in the data directory (generated on first use, as
// for rooms) and a page of its own. The tokens are returned for reloads.
func checkConfig(f *config.File, rooms *signaling.RoomsConfig, log *slog.Logger) (*signaling.CheckConfig, error) {
	c := &signaling.CheckConfig{PublicURL: publicURL(f)}
	if rooms != nil {
		c.Tokens, c.Page = rooms.Tokens, rooms.Page
	}
	if c.Tokens == nil {
		keys, path, generated, err := ensureRoomKeys(f)
		if err != nil {
			return nil, err
		}
		if generated {
			hint := "ferry check-link"
			if f.Server.DataDir != "" {
				dir, _ := filepath.Abs(filepath.Dir(path))
				hint += " --data-dir " + dir
			}
			log.Info("generated a link signing key; link to the connection check with: "+hint, "file", path)
		}
		if c.Tokens, err = auth.NewRoomTokens(auth.RoomTokensConfig{Keys: keys}); err != nil {
			return nil, err
		}
	}
	if c.Page == nil {
		var err error
		if c.Page, err = web.New(web.Config{MaxFileBytes: int64(f.Rooms.Page.MaxFileSize)}); err != nil {
			return nil, err
		}
	}
	return c, nil
}
