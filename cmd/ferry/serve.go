package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/metrics"
	"github.com/ferryrelay/ferry/relay"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the TURN/STUN relay",
		Long: "Run the TURN/STUN relay until SIGINT or SIGTERM. Without --config it runs on the\n" +
			"embedded defaults and generates a TURN REST secret in the data directory.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), f, cmd.ErrOrStderr(), nil)
		},
	}
	config.AddFlags(cmd.Flags())
	return cmd
}

// server is a running Ferry: what serve starts and stops.
type server struct {
	relay     *relay.Server
	alloclog  *alloclog.Log // nil when disabled
	http      *http.Server
	httpDone  chan error
	admin     *http.Server
	adminDone chan error
	socks     *sockets
	log       *slog.Logger
	stopping  atomic.Bool
}

// startup is the state start builds step by step; undo unwinds what is done when a later
// step fails.
type startup struct {
	f      *config.File
	log    *slog.Logger
	auth   *auth.Authenticator
	ips    relayAddrs
	reg    *prometheus.Registry
	certs  *metrics.CertificateExpiry
	tls    tlsConfigs
	events relay.EventSink
	access signaling.AccessSink
	undo   []func()
	s      *server
}

// start opens the sockets and starts the relay, the HTTP API and the admin listener. It
// logs ports, never addresses.
func start(ctx context.Context, f *config.File, logOut io.Writer) (*server, error) {
	st := &startup{f: f, log: newLogger(f, logOut), s: &server{}}
	st.s.log = st.log
	setRuntime(f)
	steps := []func(context.Context) error{st.setupAuth, st.setupRelayIPs, st.setupMetrics,
		st.openAllocLog, st.openSockets, st.startRelay, st.startHTTP, st.startAdmin}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			for i := len(st.undo) - 1; i >= 0; i-- {
				st.undo[i]()
			}
			return nil, err
		}
	}
	st.logStarted()
	return st.s, nil
}

func (st *startup) setupAuth(context.Context) error {
	secrets, path, generated, err := ensureSecret(st.f)
	if err != nil {
		return err
	}
	if generated {
		hint := "ferry credentials --user alice --ttl 1h"
		if st.f.Server.DataDir != "" { // credentials must read the same secret file
			dir, _ := filepath.Abs(filepath.Dir(path))
			hint += " --data-dir " + dir
		}
		st.log.Info("generated a TURN REST secret; mint a credential with: "+hint, "file", path)
	}
	st.auth, err = newAuthenticator(st.f, secrets)
	return err
}

func (st *startup) setupRelayIPs(context.Context) error {
	st.ips = resolveRelayIPs(st.f, func(msg string) { st.log.Warn(msg) })
	return nil
}

func (st *startup) setupMetrics(context.Context) error {
	st.reg = metrics.NewRegistry(metrics.ReadBuildInfo())
	var err error
	if st.certs, err = metrics.NewCertificateExpiry(st.reg); err != nil {
		return err
	}
	turnCert, turnKey, httpCert, httpKey := tlsFiles(st.f)
	st.tls, err = loadTLS(turnCert, turnKey, httpCert, httpKey, func(l string, t time.Time) { st.certs.Set(l, t) })
	return err
}

// tlsFiles returns the certificate files in use: TURN's when turn.tls_listen is set, the
// API's when it is served over TLS.
func tlsFiles(f *config.File) (turnCert, turnKey, httpCert, httpKey string) {
	if len(f.TURN.TLSListen) > 0 {
		turnCert, turnKey = f.TURN.TLSCertFile, f.TURN.TLSKeyFile
	}
	if f.HTTP.Listen != "" && f.HTTP.TLSCertFile != "" {
		httpCert, httpKey = f.HTTP.TLSCertFile, f.HTTP.TLSKeyFile
	}
	return
}

func (st *startup) openAllocLog(ctx context.Context) error {
	f := st.f
	if !f.AllocLog.Enabled {
		return nil
	}
	dir, err := dataDir(f)
	if err != nil {
		return err
	}
	alog, err := alloclog.Open(ctx, alloclog.Config{Path: filepath.Join(dir, alloclog.FileName),
		Retention: f.AllocLog.Retention, PurgeInterval: f.AllocLog.PurgeInterval,
		QueueLen: f.AllocLog.QueueLength, Registerer: st.reg, Logger: st.log})
	if err != nil {
		return err
	}
	st.s.alloclog = alog
	st.events, st.access = relayEvents{alog}, accessEvents{alog}
	st.undo = append(st.undo, func() { _ = alog.Close() })
	return nil
}

func (st *startup) openSockets(ctx context.Context) error {
	socks, err := openSockets(ctx, st.f, st.tls, func(msg string) { st.log.Warn(msg) })
	if err != nil {
		return err
	}
	st.s.socks = socks
	st.undo = append(st.undo, socks.close)
	return nil
}

func (st *startup) startRelay(context.Context) error {
	f, socks := st.f, st.s.socks
	if len(socks.udp) > 0 {
		setProcs(len(socks.udp[0])) // one event loop per socket of a UDP address's group
	}
	srv, err := relay.New(relay.Config{
		Realm: f.TURN.Realm, Auth: st.auth,
		UDP: socks.udp, TCP: socks.tcp, TLS: socks.tls,
		RelayIPv4: st.ips.bind4, RelayIPv6: st.ips.bind6, AdvertisedIPv4: st.ips.adv4, AdvertisedIPv6: st.ips.adv6,
		PortMin: uint16(f.Relay.PortMin), PortMax: uint16(f.Relay.PortMax),
		AllowedPeers: f.Relay.AllowedPeers, DeniedPeers: f.Relay.DeniedPeers,
		ServicePorts:   servicePorts(socks),
		TCPAllocations: f.Relay.TCPAllocations, StrictAddressFamily: f.Relay.StrictAddressFamily,
		LegacyChannelNumbers: f.Relay.LegacyChannels, NoPacketMetrics: !f.Relay.PacketMetrics,
		RelaySocketBuffer: int(f.Relay.SocketBuffer), NoGSO: !f.Relay.UDPGSO,
		NonceLifetime: f.TURN.NonceLifetime, MaxLifetime: f.Relay.MaxLifetime,
		MaxAllocationAge: f.Relay.MaxAllocationAge, Limits: relayLimits(f),
		MaxConnectionsPerIP: f.Relay.MaxConnectionsPerIP, MaxConnections: f.Relay.MaxConnections,
		Registerer: st.reg, Logger: st.log, Events: st.events,
	})
	if err != nil {
		return err
	}
	st.s.relay = srv
	st.undo = append(st.undo, func() { _ = srv.Close() })
	return nil
}

// servicePorts are Ferry's HTTP and admin ports, which no peer may reach on this host.
func servicePorts(s *sockets) []uint16 {
	var out []uint16
	for _, p := range portsOf(s.httpAddrs()) {
		out = append(out, uint16(p))
	}
	return out
}

func (s *sockets) httpAddrs() (out []net.Addr) {
	if s.http != nil {
		out = append(out, s.http.Addr())
	}
	if s.admin != nil {
		out = append(out, s.admin.Addr())
	}
	return out
}

func (st *startup) startHTTP(context.Context) error {
	f, socks, srv := st.f, st.s.socks, st.s.relay
	if socks.http == nil {
		return nil
	}
	udp, tcp, tls := socks.addrs()
	urls := signaling.BuildURLs(publicHost(f, st.ips.bind4, st.ips.adv4), portsOf(udp), portsOf(tcp), portsOf(tls))
	ready := func() bool { return srv.Ready() && !st.s.stopping.Load() }
	h, err := newHTTPServer(f, st.auth, st.reg, urls, ready, st.access, st.tls.http, st.log)
	if err != nil {
		return err
	}
	if len(f.API.Keys) == 0 {
		st.log.Warn("no API keys configured: /v1/ice-servers answers 401; create one with: ferry apikey new --name app")
	}
	if socks.httpShared {
		h.TLSConfig = nil // the shared port did the handshake (and picked the certificate by SNI)
	}
	st.s.http, st.s.httpDone = h, make(chan error, 1)
	go func() { st.s.httpDone <- serveHTTP(h, socks.http) }()
	return nil
}

func (st *startup) startAdmin(context.Context) error {
	s := st.s
	if s.socks.admin == nil {
		return nil
	}
	s.admin = &http.Server{
		Handler: metrics.AdminHandler(metrics.AdminConfig{Registry: st.reg, Pprof: st.f.Admin.Pprof,
			Ready: func() bool { return s.relay.Ready() && !s.stopping.Load() }}),
		ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: stdlog.New(io.Discard, "", 0),
	}
	s.adminDone = make(chan error, 1)
	go func() { s.adminDone <- s.admin.Serve(s.socks.admin) }()
	return nil
}

// logStarted logs what serves where: ports, never a client's address.
func (st *startup) logStarted() {
	f, socks := st.f, st.s.socks
	udp, tcp, tls := socks.addrs()
	httpPort, adminPort := "", ""
	if socks.http != nil {
		httpPort = ports(socks.http.Addr())
	}
	if socks.admin != nil {
		adminPort = ports(socks.admin.Addr())
	}
	udpSockets := 0
	if len(socks.udp) > 0 {
		udpSockets = len(socks.udp[0])
	}
	st.log.Info("ferry serving", "udp_ports", ports(udp...), "tcp_ports", ports(tcp...),
		"tls_ports", ports(tls...), "http_port", httpPort, "admin_port", adminPort,
		"relay_ports", fmt.Sprintf("%d-%d", f.Relay.PortMin, f.Relay.PortMax),
		"relay_ip", st.ips.String(), "udp_sockets", udpSockets,
		"udp_gso", f.Relay.UDPGSO, "gogc", gcSetting(f.Runtime.GOGC), "memory_limit", memLimitSetting())
}

// stop reports not-ready, lets HTTP requests in flight finish (at most 5 s), then closes the
// relay's listeners and allocations and waits for every goroutine.
func (s *server) stop() error {
	s.stopping.Store(true)
	var errs []error
	shutdown := func(h *http.Server, done chan error) {
		if h == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, h.Shutdown(ctx))
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	shutdown(s.http, s.httpDone)
	if s.http != nil { // room WebSockets are hijacked: Shutdown leaves them to the handler
		errs = append(errs, s.http.Handler.(*signaling.Handler).Close())
	}
	errs = append(errs, s.relay.Close())
	s.socks.closeTURN()
	if s.alloclog != nil { // after the relay: its shutdown events are written too
		errs = append(errs, s.alloclog.Close())
	}
	shutdown(s.admin, s.adminDone) // last: /readyz says 503 until the end
	return errors.Join(errs...)
}

// serve runs Ferry until ctx is done (SIGINT/SIGTERM), then stops it. started, if not nil,
// receives the running server (for tests).
func serve(ctx context.Context, f *config.File, logOut io.Writer, started func(*server)) error {
	s, err := start(ctx, f, logOut)
	if err != nil {
		return err
	}
	if started != nil {
		started(s)
	}
	<-ctx.Done()
	s.log.Info("stopping")
	if err := s.stop(); err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}
