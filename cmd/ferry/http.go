package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/metrics"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
)

// newHTTPServer builds the signaling HTTP server with the configured timeouts and limits.
// Its error log is discarded: net/http would log client addresses there.
// Its Handler is a *signaling.Handler: close it after Shutdown to end room connections.
func newHTTPServer(f *config.File, a *auth.Authenticator, reg prometheus.Registerer, urls []signaling.URL,
	relays signaling.RelayPicker, ready metrics.Readiness, access signaling.AccessSink, rooms *signaling.RoomsConfig,
	check *signaling.CheckConfig, tlsConf *tls.Config) (*http.Server, error) {
	keys, err := apiKeys(f)
	if err != nil {
		return nil, err
	}
	m, err := signaling.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	h := signaling.NewHandler(signaling.Config{
		Auth:           a,
		URLs:           urls,
		Relays:         relays,
		DefaultTTL:     f.Auth.DefaultTTL,
		APIKeys:        keys,
		RatePerKey:     f.API.Rate,
		BurstPerKey:    f.API.Burst,
		AllowedOrigins: f.HTTP.AllowedOrigins,
		TrustedProxies: f.HTTP.TrustedProxies,
		MaxBodyBytes:   f.HTTP.MaxBodyBytes,
		Ready:          ready,
		Metrics:        m,
		Access:         access,
		Rooms:          rooms,
		Check:          check,
	})
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: f.HTTP.ReadHeaderTimeout,
		ReadTimeout:       f.HTTP.ReadTimeout,
		WriteTimeout:      f.HTTP.WriteTimeout,
		IdleTimeout:       f.HTTP.IdleTimeout,
		MaxHeaderBytes:    f.HTTP.MaxHeaderBytes,
		ErrorLog:          log.New(io.Discard, "", 0),
	}, nil
}

// apiKeys parses api.keys.
func apiKeys(f *config.File) ([]signaling.APIKey, error) {
	var keys []signaling.APIKey
	for _, k := range f.API.Keys {
		sum, err := signaling.ParseAPIKeyHash(k.SHA256)
		if err != nil {
			return nil, fmt.Errorf("api.keys %s: %w", k.Name, err)
		}
		keys = append(keys, signaling.APIKey{Name: k.Name, SHA256: sum})
	}
	return keys, nil
}

// serveHTTP serves on ln, with TLS when http.tls_cert_file is set. It returns
// http.ErrServerClosed after Shutdown.
func serveHTTP(h *http.Server, ln net.Listener) error {
	if h.TLSConfig == nil {
		return h.Serve(ln)
	}
	return h.ServeTLS(ln, "", "")
}
