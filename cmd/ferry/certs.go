package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// certCheckInterval is how often a handshake may look at the certificate files' times.
const certCheckInterval = time.Second

// certReloader serves a certificate from PEM files and reloads it when the files change, so
// a renewed certificate takes effect without dropping allocations.
type certReloader struct {
	certFile, keyFile string
	expiry            func(notAfter time.Time) // reports each loaded certificate's NotAfter
	mu                sync.Mutex
	cert              *tls.Certificate
	modTime           time.Time
	checked           time.Time
}

func newCertReloader(certFile, keyFile string, expiry func(time.Time)) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, expiry: expiry}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	r.cert = &c
	r.modTime = latestModTime(r.certFile, r.keyFile)
	if r.expiry != nil {
		leaf := c.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return fmt.Errorf("TLS certificate: %w", err)
			}
		}
		r.expiry(leaf.NotAfter)
	}
	return nil
}

func latestModTime(files ...string) time.Time {
	var t time.Time
	for _, f := range files {
		if fi, err := statFile(f); err == nil && fi.After(t) {
			t = fi
		}
	}
	return t
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckInterval {
		r.checked = now
		if latestModTime(r.certFile, r.keyFile).After(r.modTime) {
			if err := r.load(); err != nil {
				return r.cert, nil // keep serving the old certificate; the files may be mid-write
			}
		}
	}
	if r.cert == nil {
		return nil, errors.New("no certificate")
	}
	return r.cert, nil
}

// bySNI serves, from several certificate sources, the first whose certificate names the
// server name the client asked for (SNI), or the first source's when none does or the
// client sent none.
func bySNI(sources ...func(*tls.ClientHelloInfo) (*tls.Certificate, error)) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		var first *tls.Certificate
		for _, get := range sources {
			c, err := get(hello)
			if err != nil {
				continue
			}
			if hello.ServerName != "" && hello.SupportsCertificate(c) == nil {
				return c, nil
			}
			if first == nil {
				first = c
			}
		}
		if first == nil {
			return nil, errors.New("no certificate")
		}
		return first, nil
	}
}

// tlsConfigs are the TLS configurations of Ferry's ports, with certificates reloaded from
// their files: turn for turn.tls_listen (nil without), http for an HTTPS http.listen (nil
// without), and shared for a port both use, where SNI picks the certificate.
type tlsConfigs struct {
	turn, http, shared *tls.Config
}

// loadTLS loads the configured certificates; expiry reports each one's NotAfter by listener
// ("turn", "http").
func loadTLS(turnCert, turnKey, httpCert, httpKey string, expiry func(listener string, t time.Time)) (tlsConfigs, error) {
	var c tlsConfigs
	var turnGet, httpGet func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if turnCert != "" {
		r, err := newCertReloader(turnCert, turnKey, func(t time.Time) { expiry("turn", t) })
		if err != nil {
			return c, fmt.Errorf("turn: %w", err)
		}
		turnGet = r.get
		c.turn = &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12}
	}
	if httpCert != "" {
		r, err := newCertReloader(httpCert, httpKey, func(t time.Time) { expiry("http", t) })
		if err != nil {
			return c, fmt.Errorf("http: %w", err)
		}
		httpGet = r.get
		c.http = &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12}
	}
	switch {
	case turnGet != nil && httpGet != nil:
		c.shared = &tls.Config{GetCertificate: bySNI(turnGet, httpGet), MinVersion: tls.VersionTLS12}
	case turnGet != nil:
		c.shared = c.turn
	}
	return c, nil
}
