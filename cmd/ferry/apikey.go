package main

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ferryrelay/ferry/signaling"
	"github.com/spf13/cobra"
)

func newAPIKeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "apikey", Short: "Manage API keys for the HTTP API"}
	var name string
	gen := &cobra.Command{
		Use:   "new --name NAME",
		Short: "Create an API key and print it with its configuration entry",
		Long: "Create a random API key. The key is printed once; Ferry keeps only its SHA-256,\n" +
			"which goes into api.keys in the configuration.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("apikey: --name is required")
			}
			key, sum, err := signaling.NewAPIKey()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "API key for %q (shown once; keep it in your app's secret store):\n\n  %s\n\n", name, key)
			fmt.Fprintf(out, "Add this to the configuration (api.keys) and reload Ferry (ferry reload):\n\napi:\n  keys:\n    - name: %s\n      sha256: %s\n",
				name, hex.EncodeToString(sum[:]))
			return nil
		},
	}
	gen.Flags().StringVar(&name, "name", "", "a name for the key (the app or team using it)")
	cmd.AddCommand(gen)
	return cmd
}
