package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"
)

// ExpiryWarning is how close to its expiry a certificate is reported as due for renewal.
const ExpiryWarning = 14 * 24 * time.Hour

// Certificate is what a turns: server presented, as a browser would judge it.
type Certificate struct {
	// Chain names the certificates from the leaf to the root, by subject common name (or
	// organization), as verified; unverified, as served.
	Chain []string `json:"chain"`
	// Names are the leaf's DNS names and IP addresses (subjectAltName).
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"notAfter"`
	// DaysLeft is the whole days until NotAfter; negative once expired.
	DaysLeft int `json:"daysLeft"`
	// Verified reports a chain to a trusted root that names the URL's host.
	Verified   bool   `json:"verified"`
	TLSVersion string `json:"tlsVersion,omitempty"`
}

// summary is the tls step's detail.
func (c *Certificate) summary() string {
	s := fmt.Sprintf("%s; %s; expires in %d days (%s)", c.TLSVersion, strings.Join(c.Chain, " < "),
		c.DaysLeft, c.NotAfter.UTC().Format(time.DateOnly))
	if c.DaysLeft*24 < int(ExpiryWarning.Hours()) {
		s += ": renew it now"
	}
	return s
}

// handshake runs a TLS handshake on conn for host, without ALPN (as browsers' TURN clients),
// and verifies the certificate as a browser would: the chain to a trusted root (opts.RootCAs
// or the system's), the name, the validity period.
func handshake(ctx context.Context, conn net.Conn, host string, opts Options) (*tls.Conn, *Certificate, error) {
	var cert *Certificate
	var verr error
	cfg := &tls.Config{
		ServerName: host, MinVersion: tls.VersionTLS12,
		// Verification happens in VerifyConnection, which keeps what it saw for the report.
		InsecureSkipVerify: true, //nolint:gosec // verified below, against RootCAs and host
		VerifyConnection: func(cs tls.ConnectionState) error {
			cert, verr = verify(cs, host, opts)
			return verr
		},
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, opts.timeout())
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		switch {
		case verr != nil:
			return nil, cert, verr
		case errors.Is(err, context.DeadlineExceeded):
			return nil, cert, fmt.Errorf("no TLS handshake within %s: the server does not speak TLS on this port, or a firewall holds the connection", opts.timeout())
		}
		return nil, cert, fmt.Errorf("TLS handshake: %v", err)
	}
	if cert != nil {
		cert.TLSVersion = tls.VersionName(tc.ConnectionState().Version)
	}
	return tc, cert, nil
}

// verify checks the served chain and describes it.
func verify(cs tls.ConnectionState, host string, opts Options) (*Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	now := opts.now()
	c := &Certificate{NotAfter: leaf.NotAfter, DaysLeft: int(math.Floor(leaf.NotAfter.Sub(now).Hours() / 24)),
		Names: append([]string(nil), leaf.DNSNames...)}
	for _, ip := range leaf.IPAddresses {
		c.Names = append(c.Names, ip.String())
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: opts.RootCAs, Intermediates: inter, CurrentTime: now})
	chain := cs.PeerCertificates
	if err == nil {
		chain, c.Verified = chains[0], true
	}
	for _, x := range chain {
		c.Chain = append(c.Chain, certName(x))
	}
	if err != nil {
		return c, certError(err, leaf, host, now)
	}
	return c, nil
}

func certName(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.Subject.Organization) > 0:
		return c.Subject.Organization[0]
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

// certError says why a browser would refuse the certificate.
func certError(err error, leaf *x509.Certificate, host string, now time.Time) error {
	var inv x509.CertificateInvalidError
	var hn x509.HostnameError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		if now.After(leaf.NotAfter) {
			return fmt.Errorf("the certificate expired on %s (%d days ago): browsers refuse it; renew it",
				leaf.NotAfter.UTC().Format(time.DateOnly), int(now.Sub(leaf.NotAfter).Hours()/24))
		}
		if now.Before(leaf.NotBefore) {
			return fmt.Errorf("the certificate is not valid before %s: check the server's clock", leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		return fmt.Errorf("a certificate in the chain has expired: %v", err)
	case errors.As(err, &hn):
		names := append([]string(nil), leaf.DNSNames...)
		for _, ip := range leaf.IPAddresses {
			names = append(names, ip.String())
		}
		return fmt.Errorf("the certificate is for %s, not %s: browsers refuse it; use a certificate for the name in the URL (server.public_host)",
			strings.Join(names, ", "), host)
	case errors.As(err, &ua):
		return fmt.Errorf("the certificate (issued by %q) does not chain to a trusted root: serve the full chain (fullchain.pem), or pass --ca for a private CA",
			leaf.Issuer.CommonName)
	}
	return fmt.Errorf("the certificate does not verify: %v", err)
}
