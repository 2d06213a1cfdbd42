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
	kp, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.use(kp)
	return nil
}

// keyPair is a certificate loaded from its files, not yet served.
type keyPair struct {
	certFile, keyFile string
	cert              *tls.Certificate
	notAfter          time.Time
	modTime           time.Time
}

// loadKeyPair reads and parses a PEM certificate chain and its key.
func loadKeyPair(certFile, keyFile string) (keyPair, error) {
	modTime := latestModTime(certFile, keyFile)
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return keyPair{}, fmt.Errorf("TLS certificate: %w", err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return keyPair{}, fmt.Errorf("TLS certificate: %w", err)
		}
	}
	return keyPair{certFile: certFile, keyFile: keyFile, cert: &c, notAfter: leaf.NotAfter, modTime: modTime}, nil
}

// use serves kp from now on (the caller holds r.mu, or r is not yet shared).
func (r *certReloader) use(kp keyPair) {
	r.certFile, r.keyFile, r.cert, r.modTime = kp.certFile, kp.keyFile, kp.cert, kp.modTime
	if r.expiry != nil {
		r.expiry(kp.notAfter)
	}
}

// replace serves kp, loaded by loadKeyPair (a configuration reload: the files may have been
// renewed or the paths changed); new TLS connections get it, open ones keep theirs.
func (r *certReloader) replace(kp keyPair) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.use(kp)
	r.checked = time.Now()
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
// without), and shared for a port both use, where SNI picks the certificate. turnCerts and
// httpCerts serve their certificates (nil without); a reload replaces what they serve.
type tlsConfigs struct {
	turn, http, shared   *tls.Config
	turnCerts, httpCerts *certReloader
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
		turnGet, c.turnCerts = r.get, r
		c.turn = &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12}
	}
	if httpCert != "" {
		r, err := newCertReloader(httpCert, httpKey, func(t time.Time) { expiry("http", t) })
		if err != nil {
			return c, fmt.Errorf("http: %w", err)
		}
		httpGet, c.httpCerts = r.get, r
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
