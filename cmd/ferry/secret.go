package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"
)

func newSecretCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Generate secrets"}
	cmd.AddCommand(&cobra.Command{
		Use:   "new",
		Short: "Print a new random secret (TURN REST secret or room signing key)",
		Long: "Print 32 random bytes, base64url-encoded (43 characters): good for auth.secrets (the\n" +
			"TURN REST shared secret your web app mints credentials with) and rooms.signing_keys.\n" +
			"Only the secret goes to standard output, so it can go straight into a file:\n\n" +
			"  ferry secret new > /etc/ferry/turn-secrets   # auth.secrets_file: /etc/ferry/turn-secrets\n\n" +
			"To rotate, put the new secret first, keep the old one listed until the credentials minted\n" +
			"with it have expired (auth.max_ttl), and run ferry reload after each change.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), base64.RawURLEncoding.EncodeToString(b))
			return err
		},
	})
	return cmd
}
