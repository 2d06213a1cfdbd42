package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/config"
	"github.com/spf13/cobra"
)

func newLogsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Query, export and erase the allocation log (also while ferry serve runs; --cluster: on every node)",
		Long: "The allocation log keeps who relayed what for alloclog.retention (48h): client and\n" +
			"peer IP addresses, user ids, times, traffic, and signaling HTTP requests. These\n" +
			"commands answer data-subject requests: access and export (query), erasure (erase).",
	}
	cmd.AddCommand(newLogsQueryCmd(), newLogsEraseCmd(), newLogsPurgeCmd(), newLogsStatsCmd())
	for _, c := range cmd.Commands() {
		config.AddFlags(c.Flags())
	}
	return cmd
}

// openLogStore opens the allocation log of the configured data directory, refusing to
// create one when none exists (a typo in --data-dir must not look like an empty log).
func openLogStore(cmd *cobra.Command) (*alloclog.Store, *config.File, error) {
	f, err := loadConfig(cmd)
	if err != nil {
		return nil, nil, err
	}
	dir, err := dataDir(f)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, alloclog.FileName)
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("logs: no allocation log at %s (check server.data_dir): %w", path, err)
	}
	s, err := alloclog.OpenStore(cmd.Context(), path)
	return s, f, err
}

// parseTime accepts RFC 3339 ("2026-11-29T08:00:00Z") or a duration meaning that long ago
// ("48h").
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 48h", s)
}

type filterFlags struct {
	ip, user     string
	since, until string
}

func (ff *filterFlags) add(cmd *cobra.Command, times bool) {
	cmd.Flags().StringVar(&ff.ip, "ip", "", "an IP address (as client or peer)")
	cmd.Flags().StringVar(&ff.user, "user", "", "a user id (the part after the first ':' of the TURN username)")
	if times {
		cmd.Flags().StringVar(&ff.since, "since", "", "from this time (RFC 3339, or a duration ago like 24h)")
		cmd.Flags().StringVar(&ff.until, "until", "", "until this time (exclusive)")
	}
}

func (ff *filterFlags) filter(cmd *cobra.Command) (alloclog.Filter, error) {
	var f alloclog.Filter
	var err error
	if ff.ip != "" {
		if f.IP, err = netip.ParseAddr(ff.ip); err != nil {
			return f, fmt.Errorf("--ip: %q is not an IP address", ff.ip)
		}
	}
	if cmd.Flags().Changed("user") {
		u := ff.user
		f.UserID = &u
	}
	if f.Since, err = parseTime(ff.since); err != nil {
		return f, fmt.Errorf("--since: %w", err)
	}
	if f.Until, err = parseTime(ff.until); err != nil {
		return f, fmt.Errorf("--until: %w", err)
	}
	return f, nil
}

func newLogsQueryCmd() *cobra.Command {
	var ff filterFlags
	var format string
	var all bool
	cmd := &cobra.Command{
		Use:     "query (--ip A | --user U | --since T [--until T]) [--format json|csv] [--cluster]",
		Aliases: []string{"export"},
		Short:   "Export the records about an IP address, a user or a time range (GDPR Art. 15/20; alias: export)",
		Long: "Export the records about an IP address, a user or a time range (GDPR Art. 15/20).\n" +
			"With --cluster, every node of the cluster (cluster.redis_url) is asked through its admin\n" +
			"listener, and the answer is JSON with one section per node; a node that does not answer\n" +
			"is listed as not done and the command fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter(cmd)
			if err != nil {
				return err
			}
			if !f.IP.IsValid() && f.UserID == nil && f.Since.IsZero() && f.Until.IsZero() {
				return errors.New("logs query: give --ip, --user or a time range")
			}
			if all {
				if format != "json" {
					return errors.New("logs query --cluster: the answer is JSON, one section per node (no --format csv)")
				}
				return runClusterExport(cmd, f)
			}
			if format != "json" && format != "csv" {
				return fmt.Errorf("logs query: --format must be json or csv, not %q", format)
			}
			s, _, err := openLogStore(cmd)
			if err != nil {
				return err
			}
			defer s.Close()
			recs, err := s.Query(cmd.Context(), f)
			if err != nil {
				return err
			}
			if format == "csv" {
				return writeCSV(cmd.OutOrStdout(), recs)
			}
			return printJSON(cmd.OutOrStdout(), recs)
		},
	}
	ff.add(cmd, true)
	cmd.Flags().StringVar(&format, "format", "json", "json or csv")
	cmd.Flags().BoolVar(&all, "cluster", false, "ask every node of the cluster (cluster.redis_url), reporting per node")
	return cmd
}

func writeCSV(w io.Writer, recs alloclog.Records) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"kind", "id", "start", "end", "transport", "client_ip", "client_port", "server",
		"relayed", "user_id", "realm", "peers", "bytes_to_peer", "packets_to_peer", "bytes_to_client",
		"packets_to_client", "end_reason", "route", "status", "user_agent"})
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	for _, a := range recs.Allocations {
		end := ""
		if a.End != nil {
			end = ts(*a.End)
		}
		var peers []string
		for _, p := range a.Peers {
			peers = append(peers, p.IP+"@"+ts(p.First))
		}
		cw.Write([]string{"allocation", strconv.FormatUint(a.ID, 10), ts(a.Start), end, a.Transport,
			a.ClientIP, strconv.Itoa(a.ClientPort), a.Server, a.Relayed, a.UserID, a.Realm,
			strings.Join(peers, " "), strconv.FormatInt(a.BytesToPeer, 10), strconv.FormatInt(a.PacketsToPeer, 10),
			strconv.FormatInt(a.BytesToClient, 10), strconv.FormatInt(a.PacketsToClient, 10), a.EndReason, "", "", ""})
	}
	for _, r := range recs.HTTPRequests {
		cw.Write([]string{"http_request", "", ts(r.Time), "", "", r.ClientIP, "", "", "", "", "", "",
			"", "", "", "", "", r.Route, strconv.Itoa(r.Status), r.UserAgent})
	}
	cw.Flush()
	return cw.Error()
}

func newLogsEraseCmd() *cobra.Command {
	var ff filterFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "erase (--ip A | --user U) [--cluster]",
		Short: "Delete every record about an IP address or a user, down to the bytes on disk (GDPR Art. 17)",
		Long: "Delete every record about an IP address or a user, down to the bytes on disk (GDPR Art. 17).\n" +
			"With --cluster, every node of the cluster (cluster.redis_url) erases through its admin\n" +
			"listener, and each reports done or NOT DONE; the command fails while any node is not done.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter(cmd)
			if err != nil {
				return err
			}
			if f.IP.IsValid() == (f.UserID != nil) {
				return errors.New("logs erase: give exactly one of --ip or --user")
			}
			if all {
				return runClusterErase(cmd, f)
			}
			s, _, err := openLogStore(cmd)
			if err != nil {
				return err
			}
			defer s.Close()
			n, err := s.Erase(cmd.Context(), f)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "erased %d records: %d allocations, %d permissions, %d HTTP requests\n",
				n.Total(), n.Allocations, n.Permissions, n.HTTPRequests)
			return nil
		},
	}
	ff.add(cmd, false)
	cmd.Flags().BoolVar(&all, "cluster", false, "erase on every node of the cluster (cluster.redis_url), reporting per node")
	return cmd
}

func newLogsPurgeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "purge",
		Short: "Delete the records older than alloclog.retention now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, f, err := openLogStore(cmd)
			if err != nil {
				return err
			}
			defer s.Close()
			n, err := s.Purge(cmd.Context(), time.Now().Add(-f.AllocLog.Retention))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d records older than %s: %d allocations, %d permissions, %d HTTP requests\n",
				n.Total(), f.AllocLog.Retention, n.Allocations, n.Permissions, n.HTTPRequests)
			return nil
		},
	}
}

func newLogsStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Count the records and show the age of the oldest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, f, err := openLogStore(cmd)
			if err != nil {
				return err
			}
			defer s.Close()
			st, err := s.Stats(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "allocations:   %d\npermissions:   %d\nhttp requests: %d\n", st.Allocations, st.Permissions, st.HTTPRequests)
			if st.Oldest.IsZero() {
				fmt.Fprintln(out, "oldest record: none")
			} else {
				fmt.Fprintf(out, "oldest record: %s (%s old; retention %s)\n", st.Oldest.Format(time.RFC3339),
					time.Since(st.Oldest).Truncate(time.Second), f.AllocLog.Retention)
			}
			return nil
		},
	}
}
