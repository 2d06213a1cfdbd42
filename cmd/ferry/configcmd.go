package main

import (
	"fmt"

	"github.com/ferryrelay/ferry/config"
	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check or show the configuration"}
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration and list every problem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := loadConfig(cmd); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
			return nil
		},
	}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration with secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			out, err := f.Redacted()
			if err != nil {
				return err
			}
			if _, err = cmd.OutOrStdout().Write(out); err != nil {
				return err
			}
			if len(f.Auth.Secrets) == 0 {
				// Not "no secret": serve generates one in the data directory.
				fmt.Fprintln(cmd.OutOrStdout(), "# auth.secrets is empty: ferry serve uses (or generates) the secret in the data directory's turn-secret file")
			}
			return nil
		},
	}
	defaults := &cobra.Command{
		Use:   "default",
		Short: "Print the embedded default configuration, with comments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.Default())
			return err
		},
	}
	for _, c := range []*cobra.Command{validate, print} {
		config.AddFlags(c.Flags())
	}
	cmd.AddCommand(validate, print, defaults)
	return cmd
}
