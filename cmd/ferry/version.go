package main

import (
	"fmt"

	"github.com/ferryrelay/ferry/metrics"
	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			bi := metrics.ReadBuildInfo()
			fmt.Fprintf(cmd.OutOrStdout(), "ferry %s (revision %s, %s)\n", bi.Version, bi.Revision, bi.GoVersion)
		},
	}
}
