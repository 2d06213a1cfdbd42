package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/spf13/cobra"
)

func newCredentialsCmd() *cobra.Command {
	var user string
	var ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "credentials --user ID [--ttl 1h] [--json]",
		Short: "Mint a TURN REST credential from the configured secret",
		Long: "Mint a time-limited TURN credential (draft-uberti-behave-turn-rest-00): the username is\n" +
			"<expiry unix seconds>:<user id>, the password base64(HMAC-SHA1(secret, username)).\n" +
			"With --json, print the RTCConfiguration that GET /v1/ice-servers answers: the stun: URL\n" +
			"and the turn:/turns: URLs of the configured listeners with this credential.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if user == "" {
				return errors.New("credentials: --user is required")
			}
			if !cmd.Flags().Changed("ttl") {
				ttl = f.Auth.DefaultTTL
			}
			secrets, _, _, err := ensureSecret(f)
			if err != nil {
				return err
			}
			a, err := newAuthenticator(f, secrets)
			if err != nil {
				return err
			}
			c, err := a.Issue(user, ttl)
			if err != nil {
				return fmt.Errorf("credentials: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				// The shape and URLs of /v1/ice-servers, for the configured listeners.
				return printJSON(out, signaling.NewRTCConfiguration(configuredURLs(f), c))
			}
			fmt.Fprintf(out, "username: %s\npassword: %s\nexpires:  %s (in %s)\n",
				c.Username, c.Password, c.Expires.Format(time.RFC3339), c.TTL)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "user id to embed (may contain ':'; no control characters)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default auth.default_ttl, at most auth.max_ttl)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print an RTCConfiguration (JSON), as /v1/ice-servers answers")
	config.AddFlags(cmd.Flags())
	return cmd
}
