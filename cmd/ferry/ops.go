package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferryrelay/ferry/config"
	"github.com/spf13/cobra"
)

// opsStatus is what POST /-/reload and /-/drain answer on the admin listener.
type opsStatus struct {
	Status      string   `json:"status"`                // reloaded, failed, draining, serving
	Problems    []string `json:"problems,omitempty"`    // why a reload failed
	Allocations *int     `json:"allocations,omitempty"` // live allocations (drain)
	// A reload's changes, and the file the server reads ("" when it runs without one).
	Applied    []string `json:"applied,omitempty"`
	Restart    []string `json:"restart_needed,omitempty"`
	ConfigFile *string  `json:"config_file,omitempty"`
}

// adminHandler adds the operator's actions to the admin listener: POST /-/reload reloads
// the configuration and answers whether it worked (with every problem); POST /-/drain starts
// a drain, GET /-/drain tells how it goes. Requests with an Origin header are refused: no web
// page a browser on the admin network shows may trigger them.
func (s *server) adminHandler(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if !opsRequest(w, r, http.MethodPost) {
			return
		}
		file := s.configFile()
		rep, err := s.reload()
		if err != nil {
			writeOps(w, http.StatusInternalServerError, opsStatus{Status: "failed", Problems: reloadProblems(err), ConfigFile: &file})
			return
		}
		writeOps(w, http.StatusOK, opsStatus{Status: "reloaded", Applied: rep.Applied, Restart: rep.Restart, ConfigFile: &file})
	})
	mux.HandleFunc("/-/drain", func(w http.ResponseWriter, r *http.Request) {
		if !opsRequest(w, r, http.MethodPost, http.MethodGet) {
			return
		}
		if r.Method == http.MethodPost {
			select {
			case s.drainReq <- struct{}{}:
			default: // one is on its way
			}
		}
		n := s.relay.AllocationCount()
		st := opsStatus{Status: "serving", Allocations: &n}
		if r.Method == http.MethodPost || s.draining.Load() {
			st.Status = "draining"
		}
		writeOps(w, http.StatusOK, st)
	})
	s.addLogsHandlers(mux) // data-subject requests from ferry logs --cluster (clusterlogs.go)
	mux.Handle("/", next)
	return mux
}

// opsRequest answers 405 to other methods and 403 to requests from a web page.
func opsRequest(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if r.Header.Get("Origin") != "" {
		writeOps(w, http.StatusForbidden, opsStatus{Status: "forbidden", Problems: []string{"requests from web pages are refused"}})
		return false
	}
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeOps(w, http.StatusMethodNotAllowed, opsStatus{Status: "method not allowed"})
	return false
}

func writeOps(w http.ResponseWriter, code int, st opsStatus) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}

func newReloadCmd() *cobra.Command {
	var pidFile string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make the running ferry serve read its configuration again",
		Long: "Reload the running server's configuration: secrets, API keys, room signing keys, the\n" +
			"peer policy, caps and quotas, log level and TLS certificates. It asks the admin listener\n" +
			"(admin.listen) and prints the result, or every problem when the new configuration is\n" +
			"refused (the running one stays). Without an admin listener it sends SIGHUP to the\n" +
			"process in server.pid_file. Use the same --config as the server.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, localErr, err := opsConfig(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if base := adminURL(f); base != "" {
				st, code, err := callAdmin(cmd.Context(), http.MethodPost, base+"/-/reload")
				if err != nil {
					return fmt.Errorf("reload: %w", err)
				}
				if code != http.StatusOK {
					return fmt.Errorf("reload refused: the running configuration stays:\n  - %s", strings.Join(st.Problems, "\n  - "))
				}
				printReload(out, cmd.ErrOrStderr(), st, configOptions(cmd).Path)
				return nil
			}
			if localErr != nil { // the server's answer goes to its log only: say it here
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the server will refuse this configuration if it reads it as this command does:\n%v\n", localErr)
			}
			pid, err := signalPIDFile(f, pidFile, syscall.SIGHUP)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "sent SIGHUP to ferry (pid %d); its log says whether the configuration was taken\n", pid)
			return nil
		},
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "signal the process in this file (default: server.pid_file)")
	config.AddFlags(cmd.Flags())
	return cmd
}

func newDrainCmd() *cobra.Command {
	var pidFile string
	var wait bool
	cmd := &cobra.Command{
		Use:   "drain [--wait]",
		Short: "Drain the running ferry serve: refuse new calls, exit when the running ones end",
		Long: "Start a drain, as SIGTERM does: /readyz turns 503, new allocations get 508 and new\n" +
			"rooms are refused while running calls go on; the server exits when the last allocation\n" +
			"ends or after server.drain_timeout. With --wait, wait for the server to exit, printing\n" +
			"what remains (a Kubernetes preStop hook). Uses the admin listener, else server.pid_file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, _, err := opsConfig(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			base := adminURL(f)
			if base == "" {
				pid, err := signalPIDFile(f, pidFile, syscall.SIGTERM)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "sent SIGTERM to ferry (pid %d): draining\n", pid)
				if wait {
					return waitPID(cmd.Context(), pid)
				}
				return nil
			}
			st, _, err := callAdmin(cmd.Context(), http.MethodPost, base+"/-/drain")
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			fmt.Fprintf(out, "draining: %d allocation(s) remain\n", *st.Allocations)
			if wait {
				return waitDrained(cmd.Context(), out, base, *st.Allocations)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "signal the process in this file (default: server.pid_file)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the server has exited")
	config.AddFlags(cmd.Flags())
	return cmd
}

// printReload tells what a reload did: the settings applied, those waiting for a restart,
// and a warning when the server reads another file than the one this command was given
// (a reload re-reads the server's own configuration, never the command's).
func printReload(out, errw io.Writer, st opsStatus, given string) {
	file := ""
	if st.ConfigFile != nil {
		file = *st.ConfigFile
	}
	if abs, err := filepath.Abs(given); given != "" && err == nil && file != "" && abs != file {
		fmt.Fprintf(errw, "warning: the server reads %s, not %s; it re-read its own file\n", file, given)
	}
	if given != "" && file == "" && st.ConfigFile != nil {
		fmt.Fprintf(errw, "warning: the server runs without a configuration file (only the secret files in its data "+
			"directory are read again); to use %s, restart it with --config %s\n", given, given)
	}
	switch {
	case len(st.Applied) == 0:
		fmt.Fprintln(out, "configuration reloaded: nothing that a reload applies had changed")
	default:
		fmt.Fprintf(out, "configuration reloaded: applied %s\n", strings.Join(st.Applied, ", "))
	}
	if len(st.Restart) > 0 {
		fmt.Fprintf(errw, "warning: changed, but they take effect only when Ferry restarts: %s\n", strings.Join(st.Restart, ", "))
	}
}

// opsConfig loads the configuration to find the server; a configuration that does not
// validate here still names its admin listener (the server's own answer is what counts), and
// its problems are returned. A file that cannot be read or parsed names nothing: usable is
// then false and the error says why.
func opsConfig(cmd *cobra.Command) (f *config.File, problems error, usable error) {
	f, err := loadConfig(cmd)
	if f == nil {
		return &config.File{}, err, fmt.Errorf("cannot find the running server (admin.listen, server.pid_file) "+
			"in a configuration that does not load; the server was not asked:\n%w", err)
	}
	return f, err, nil
}

// adminURL is the base URL of the admin listener, on loopback when it listens on every
// address; "" without one.
func adminURL(f *config.File) string {
	a := f.Admin.Listen
	host, port, err := net.SplitHostPort(a)
	if a == "" || err != nil || port == "0" {
		return ""
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// callAdmin sends an operator request to the admin listener and decodes the answer.
func callAdmin(ctx context.Context, method, url string) (opsStatus, int, error) {
	var st opsStatus
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return st, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, 0, fmt.Errorf("is ferry serve running with this configuration's admin.listen? %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(body, &st); err != nil {
		return st, resp.StatusCode, fmt.Errorf("%s answered %s: %.200s", url, resp.Status, body)
	}
	if st.Allocations == nil {
		st.Allocations = new(int)
	}
	return st, resp.StatusCode, nil
}

// waitDrained polls the admin listener until the server is gone, printing what remains when
// it changes.
func waitDrained(ctx context.Context, out io.Writer, base string, last int) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting (the server goes on draining: %d allocation(s) remained): %w", last, ctx.Err())
		case <-t.C:
		}
		st, _, err := callAdmin(ctx, http.MethodGet, base+"/-/drain")
		if err != nil {
			fmt.Fprintln(out, "ferry has stopped")
			return nil
		}
		if *st.Allocations != last {
			last = *st.Allocations
			fmt.Fprintf(out, "draining: %d allocation(s) remain\n", last)
		}
	}
}

// signalPIDFile sends sig to the process whose id is in pidFile (or server.pid_file).
func signalPIDFile(f *config.File, pidFile string, sig os.Signal) (int, error) {
	if pidFile == "" {
		pidFile = f.Server.PIDFile
	}
	if pidFile == "" {
		return 0, errNoReload
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("server.pid_file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("server.pid_file %s holds no process id", pidFile)
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		err = p.Signal(sig)
	}
	if err != nil {
		return pid, fmt.Errorf("signal ferry (pid %d from %s): %w", pid, pidFile, err)
	}
	return pid, nil
}

// waitPID waits until process pid has exited.
func waitPID(ctx context.Context, pid int) error {
	for {
		p, err := os.FindProcess(pid)
		if err != nil || p.Signal(syscall.Signal(0)) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
