// Command ferry runs Ferry, a TURN/STUN relay with a small signaling add-on, and the
// operator's commands around it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(1)
	}
}

// run executes the command line args; it never exits the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "ferry",
		Short:         "A TURN/STUN relay for WebRTC video consultations",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringP("config", "c", "", "YAML configuration file (default: the embedded defaults)")
	root.AddCommand(newServeCmd(), newCredentialsCmd(), newRoomCmd(), newAPIKeyCmd(), newLogsCmd(), newConfigCmd(),
		newReloadCmd(), newDrainCmd(), newSecretCmd(), newVersionCmd(), newCheckCmd(), newCheckLinkCmd(), newFirewallCmd())
	return root
}
