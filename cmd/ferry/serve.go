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
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
		Long: "Run the TURN/STUN relay. Without --config it runs on the embedded defaults and\n" +
			"generates a TURN REST secret in the data directory.\n\n" +
			"Signals: SIGHUP reloads the configuration (ferry reload); SIGTERM drains: new\n" +
			"allocations and rooms are refused while running calls go on, and Ferry exits when the\n" +
			"last allocation ends or after server.drain_timeout; SIGINT, or a second SIGTERM,\n" +
			"stops at once.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := configOptions(cmd)
			f, err := config.Load(opts)
			if err != nil {
				return err
			}
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
			defer signal.Stop(sigs)
			// Signals steer serve (drain, reload); the command's context, which main cancels
			// on the first SIGINT or SIGTERM, must not stop it behind their back.
			return serve(context.WithoutCancel(cmd.Context()), opts, f, cmd.ErrOrStderr(), sigs, nil)
		},
	}
	config.AddFlags(cmd.Flags())
	return cmd
}

// server is a running Ferry: what serve starts, reloads, drains and stops.
type server struct {
	relay     relayNode     // noRelay when server.role is signaling
	alloclog  *alloclog.Log // nil when disabled
	http      *http.Server
	httpDone  chan error
	api       *signaling.Handler // http's handler; nil without http.listen
	admin     *http.Server
	adminDone chan error
	socks     *sockets
	log       *slog.Logger
	stopping  atomic.Bool

	// What a reload replaces (reload.go).
	opts     config.Options              // where the configuration came from: a reload reads it again
	conf     atomic.Pointer[config.File] // the configuration in force
	started  *config.File                // the configuration at start: what a restart would change
	level    *slog.LevelVar
	auth     *auth.Authenticator
	tokens   *auth.RoomTokens // room and check-link tokens; nil without http.listen
	tls      tlsConfigs
	ops      *metrics.Operations
	reloadMu sync.Mutex
	// Drain state (drain.go).
	draining    atomic.Bool
	drainReq    chan struct{} // an admin POST /-/drain
	drainReport time.Duration // how often a drain logs what remains
	pidFile     string        // removed at exit
	cluster     *clusterNode  // nil without cluster.redis_url
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
	// relaySrv is the relay (nil when server.role is signaling); urls the ICE server URLs of
	// its listeners.
	relaySrv *relay.Server
	urls     []signaling.URL
	undo     []func()
	s        *server
}

// start opens the sockets and starts the relay, the HTTP API and the admin listener. It
// logs ports, never addresses. opts say where f came from, for reloads.
func start(ctx context.Context, opts config.Options, f *config.File, logOut io.Writer) (*server, error) {
	log, level := newLogger(f, logOut)
	st := &startup{f: f, log: log, s: &server{log: log, level: level, opts: opts,
		drainReq: make(chan struct{}, 1), drainReport: drainReportInterval}}
	st.s.conf.Store(f)
	st.s.started = f
	setRuntime(f)
	steps := []func(context.Context) error{st.secureFiles, st.setupAuth, st.setupRelayIPs, st.setupMetrics,
		st.openAllocLog, st.openSockets, st.startRelay, st.startCluster, st.startHTTP, st.startAdmin, st.writePIDFile}
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

// secureFiles makes what serve writes private whatever the umask (0600 files, 0700
// directories), and fixes the modes of the data directory and the files already in it.
func (st *startup) secureFiles(context.Context) error {
	setUmask(serveUmask)
	if !usesDataDir(st.f) {
		return nil
	}
	dir, err := dataDir(st.f)
	if err != nil {
		return err
	}
	return secureDataDir(dir, st.log)
}

// writePIDFile writes server.pid_file, for ferry reload and ferry drain.
func (st *startup) writePIDFile(context.Context) error {
	p := st.f.Server.PIDFile
	if p == "" {
		return nil
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("server.pid_file: %w", err)
	}
	st.s.pidFile = p
	return nil
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
	st.s.auth = st.auth
	return err
}

func (st *startup) setupRelayIPs(ctx context.Context) error {
	st.ips = resolveRelayIPs(st.f, func(msg string) { st.log.Warn(msg) })
	if !st.f.RunsRelay() {
		return nil
	}
	return st.ips.checkLocal(ctx)
}

func (st *startup) setupMetrics(context.Context) error {
	st.reg = metrics.NewRegistry(metrics.ReadBuildInfo())
	var err error
	if st.certs, err = metrics.NewCertificateExpiry(st.reg); err != nil {
		return err
	}
	if st.s.ops, err = metrics.NewOperations(st.reg); err != nil {
		return err
	}
	st.s.ops.Loaded(time.Now())
	turnCert, turnKey, httpCert, httpKey := tlsFiles(st.f)
	st.tls, err = loadTLS(turnCert, turnKey, httpCert, httpKey, func(l string, t time.Time) { st.certs.Set(l, t) })
	st.s.tls = st.tls
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
	if !f.RunsRelay() {
		st.s.relay = noRelay{}
		return nil
	}
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
	st.s.relay, st.relaySrv = srv, srv
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
	f, socks := st.f, st.s.socks
	if socks.http == nil {
		return nil
	}
	rooms, err := roomsConfig(f, st.reg, st.log, st.s.cluster)
	if err != nil {
		return err
	}
	check, err := checkConfig(f, rooms, st.log)
	if err != nil {
		return err
	}
	st.s.tokens = check.Tokens // the rooms' too: one set of signing keys, replaced on reload
	h, err := newHTTPServer(f, st.auth, st.reg, st.iceURLs(), st.s.cluster.picker(), st.s.readiness, st.access, rooms, check, st.tls.http)
	if err != nil {
		return err
	}
	st.s.api = h.Handler.(*signaling.Handler)
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
		Handler: s.adminHandler(metrics.AdminHandler(metrics.AdminConfig{Registry: st.reg, Pprof: st.f.Admin.Pprof,
			Ready: s.readiness})),
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
	if s.cluster != nil { // first: ICE endpoints stop handing this relay out
		errs = append(errs, s.cluster.closeHeartbeat())
	}
	shutdown(s.http, s.httpDone)
	if s.api != nil { // room WebSockets are hijacked: Shutdown leaves them to the handler
		errs = append(errs, s.api.Close())
	}
	if s.cluster != nil {
		errs = append(errs, s.cluster.close())
	}
	errs = append(errs, s.relay.Close())
	s.socks.closeTURN()
	if s.alloclog != nil { // after the relay: its shutdown events are written too
		errs = append(errs, s.alloclog.Close())
	}
	shutdown(s.admin, s.adminDone) // last: /readyz says 503 until the end
	if s.pidFile != "" {
		_ = os.Remove(s.pidFile)
	}
	return errors.Join(errs...)
}

// serve runs Ferry until a signal on sigs or the end of ctx stops it (drain.go: run), then
// stops it. opts say where f came from, for reloads. started, if not nil, receives the
// running server (for tests).
func serve(ctx context.Context, opts config.Options, f *config.File, logOut io.Writer, sigs <-chan os.Signal, started func(*server)) error {
	s, err := start(ctx, opts, f, logOut)
	if err != nil {
		return err
	}
	if started != nil {
		started(s)
	}
	s.run(ctx, sigs)
	s.log.Info("stopping")
	if err := s.stop(); err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}
