package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/check"
	"github.com/ferryrelay/ferry/config"
	"github.com/spf13/cobra"
)

// checkCredentialTTL is the lifetime of the credential `ferry check` mints from a secret.
const checkCredentialTTL = 10 * time.Minute

// checkFlags are ferry check's inputs.
type checkFlags struct {
	secret, secretFile, username, password, apiKey, apiKeyFile, user, ca string
	timeout                                                              time.Duration
	asJSON                                                               bool
}

func newCheckCmd() *cobra.Command {
	var fl checkFlags
	cmd := &cobra.Command{
		Use:   "check [URL...]",
		Short: "Check a running Ferry (or any TURN server) from outside, transport by transport",
		Long: "Check TURN servers as a browser behind a firewall uses them: for each URL a STUN Binding\n" +
			"(the mapped address), two allocations, a permission and a relayed round trip between\n" +
			"them (no third address), Refresh and deletion; for turns: also the certificate chain,\n" +
			"the name and the days to expiry. Prints a table with timings (--json: the same as JSON)\n" +
			"and exits non-zero with one line per failed URL.\n\n" +
			"URLs are turn:, turns: and stun: URLs, with --secret (or --secret-file) to mint a TURN\n" +
			"REST credential or --username and --password; or an ICE-servers URL such as\n" +
			"https://turn.clinic.example/v1/ice-servers with --api-key (or --api-key-file), whose\n" +
			"every URL is checked with the credential it hands out. Without a URL, the URLs of this\n" +
			"configuration's listeners with its secret. Prefer the -file flags: command lines are\n" +
			"visible to other users of the machine.",
		Example: "  ferry check 'turns:turn.clinic.example:443?transport=tcp' --secret-file /etc/ferry/secrets/turn-secrets\n" +
			"  ferry check https://turn.clinic.example/v1/ice-servers --api-key-file app.key --json\n" +
			"  ferry check --config /etc/ferry/ferry.yaml",
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, opts, err := fl.targets(cmd, args)
			if err != nil {
				return err
			}
			rep := check.RunAll(cmd.Context(), targets, opts)
			out := cmd.OutOrStdout()
			if fl.asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else if err := rep.WriteTable(out); err != nil {
				return err
			}
			failures := rep.Failures()
			for _, f := range failures {
				fmt.Fprintln(cmd.ErrOrStderr(), "FAIL "+f)
			}
			if len(failures) > 0 {
				return fmt.Errorf("check: %d of %d URLs failed", len(failures), len(rep.Results))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.secret, "secret", "", "TURN REST secret to mint a credential with")
	f.StringVar(&fl.secretFile, "secret-file", "", "file whose first line is the TURN REST secret")
	f.StringVar(&fl.username, "username", "", "TURN username (a static user, or a REST username already minted)")
	f.StringVar(&fl.password, "password", "", "TURN password for --username")
	f.StringVar(&fl.apiKey, "api-key", "", "API key for an ICE-servers URL")
	f.StringVar(&fl.apiKeyFile, "api-key-file", "", "file holding the API key")
	f.StringVar(&fl.user, "user", "ferry-check", "user id in the minted REST username")
	f.StringVar(&fl.ca, "ca", "", "PEM file of CA certificates to trust (a private CA) instead of the system's")
	f.DurationVar(&fl.timeout, "timeout", check.DefaultTimeout, "how long each step may take")
	f.BoolVar(&fl.asJSON, "json", false, "print the report as JSON")
	cmd.MarkFlagsMutuallyExclusive("secret", "secret-file", "username")
	cmd.MarkFlagsMutuallyExclusive("api-key", "api-key-file")
	cmd.MarkFlagsRequiredTogether("username", "password")
	// Without a URL the configuration's listeners and secret are checked.
	f.String("data-dir", "", "state directory holding the generated secret (server.data_dir)")
	f.String("public-host", "", "host name in the configured URLs (server.public_host)")
	return cmd
}

// targets resolves the URLs to check and their credentials.
func (fl *checkFlags) targets(cmd *cobra.Command, args []string) ([]check.Target, check.Options, error) {
	opts := check.Options{Timeout: fl.timeout}
	if fl.ca != "" {
		pem, err := os.ReadFile(fl.ca)
		if err != nil {
			return nil, opts, fmt.Errorf("check: --ca: %w", err)
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pem) {
			return nil, opts, fmt.Errorf("check: --ca: %s holds no PEM certificate", fl.ca)
		}
	}
	var f *config.File
	if len(args) == 0 || fl.needsConfigSecret(args) {
		var err error
		if f, err = loadConfig(cmd); err != nil {
			return nil, opts, err
		}
	}
	if len(args) == 0 {
		for _, u := range configuredURLs(f) {
			args = append(args, u.String())
		}
	}
	var out []check.Target
	for _, a := range args {
		if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
			got, err := fl.fetch(cmd.Context(), a, opts)
			if err != nil {
				return nil, opts, err
			}
			out = append(out, got...)
			continue
		}
		t := check.Target{URL: a}
		if !strings.HasPrefix(a, "stun") {
			var err error
			if t.Username, t.Password, err = fl.credential(f); err != nil {
				return nil, opts, err
			}
		}
		out = append(out, t)
	}
	return out, opts, nil
}

// needsConfigSecret reports TURN URLs given without a credential: the configured secret
// mints one.
func (fl *checkFlags) needsConfigSecret(args []string) bool {
	if fl.secret != "" || fl.secretFile != "" || fl.username != "" {
		return false
	}
	for _, a := range args {
		if strings.HasPrefix(a, "turn") {
			return true
		}
	}
	return false
}

// credential returns the TURN credential for URLs given directly: --username/--password, or
// a REST credential minted from --secret, --secret-file or the configuration's secret.
func (fl *checkFlags) credential(f *config.File) (string, string, error) {
	if fl.username != "" {
		return fl.username, fl.password, nil
	}
	secret := fl.secret
	switch {
	case fl.secretFile != "":
		s, err := firstLine(fl.secretFile)
		if err != nil {
			return "", "", fmt.Errorf("check: --secret-file: %w", err)
		}
		secret = s
	case secret == "" && f != nil:
		s, err := configuredSecret(f)
		if err != nil {
			return "", "", err
		}
		secret = s
	}
	if secret == "" {
		return "", "", errors.New("check: TURN URLs need --secret, --secret-file, or --username and --password")
	}
	a, err := auth.New(auth.Config{Secrets: []string{secret}, MaxTTL: checkCredentialTTL})
	if err != nil {
		return "", "", fmt.Errorf("check: %w", err)
	}
	c, err := a.Issue(fl.user, checkCredentialTTL)
	if err != nil {
		return "", "", fmt.Errorf("check: --user: %w", err)
	}
	return c.Username, c.Password, nil
}

// configuredSecret returns the secret that issues credentials: the first of auth.secrets,
// or the one `ferry serve` generated in the data directory (never a new one).
func configuredSecret(f *config.File) (string, error) {
	if len(f.Auth.Secrets) > 0 {
		return f.Auth.Secrets[0], nil
	}
	dir, err := dataDirPath(f)
	if err != nil {
		return "", err
	}
	s, err := firstLine(filepath.Join(dir, secretFileName))
	if err != nil {
		return "", fmt.Errorf("check: no secret configured and none generated yet (%v): give --secret-file or --username and --password", err)
	}
	return s, nil
}

// fetch gets the URLs of an ICE-servers endpoint with the API key.
func (fl *checkFlags) fetch(ctx context.Context, url string, opts check.Options) ([]check.Target, error) {
	key := fl.apiKey
	if fl.apiKeyFile != "" {
		k, err := firstLine(fl.apiKeyFile)
		if err != nil {
			return nil, fmt.Errorf("check: --api-key-file: %w", err)
		}
		key = k
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12}
	client := &http.Client{Transport: tr, Timeout: opts.Timeout}
	defer client.CloseIdleConnections()
	targets, err := check.FetchTargets(ctx, client, url, key)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return targets, nil
}

// firstLine returns the first line of a file, trimmed.
func firstLine(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return line, nil
}
