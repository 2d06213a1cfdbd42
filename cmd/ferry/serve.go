package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/config"
	"github.com/ferryrelay/ferry/metrics"
	"github.com/ferryrelay/ferry/relay"
	"github.com/ferryrelay/ferry/signaling"
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

// listeners are the sockets serve opened; main owns ports and TLS, components get sockets.
type listeners struct {
	udp       [][]*net.UDPConn
	tcp       []net.Listener
	tls       []net.Listener
	sharedTLS []net.Listener // turn.tls_listen entries that http.listen names too (one port 443)
	http      net.Listener   // nil when http.listen is ""; a handoffListener when shared
	admin     net.Listener   // nil when admin.listen is ""
}

// handoffListener is the HTTP server's listener on a TLS port it shares with TURN: the relay
// hands it the connections that speak HTTP (relay.Config.HTTPHandoff).
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// handoff gives c to the HTTP server, or closes it when the server has stopped.
func (l *handoffListener) handoff(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// close closes every socket; on the way up, before the HTTP servers own theirs.
func (l *listeners) close() {
	l.closeTURN()
	for _, ln := range []net.Listener{l.http, l.admin} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// closeTURN closes the TURN sockets (the HTTP servers close their listeners on Shutdown).
func (l *listeners) closeTURN() {
	for _, socks := range l.udp {
		for _, s := range socks {
			_ = s.Close()
		}
	}
	for _, ln := range slices.Concat(l.tcp, l.tls, l.sharedTLS) {
		_ = ln.Close()
	}
}

// openListeners opens the configured sockets; warn reports a kernel cap on socket buffers.
func openListeners(ctx context.Context, f *config.File, warn func(string)) (*listeners, error) {
	l := &listeners{}
	var lc net.ListenConfig
	fail := func(err error) (*listeners, error) {
		l.close()
		return nil, err
	}
	n := f.TURN.UDPSockets
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	buf, _ := f.TURN.SocketBufferBytes()
	for _, a := range f.TURN.UDPListen {
		socks, err := relay.ListenUDP(ctx, listenNetwork("udp", a), a, n, buf)
		if err != nil {
			return fail(fmt.Errorf("turn: %w", err))
		}
		l.udp = append(l.udp, socks)
	}
	// One warning per setting, from the first socket that has it.
	if len(l.udp) > 0 && buf > 0 {
		if got, err := relay.SetSocketBuffers(l.udp[0][0], buf); err == nil && got < buf {
			warn(bufferWarning("turn.socket_buffer", buf, got))
		}
	}
	if rbuf, _ := f.Relay.SocketBufferBytes(); rbuf > 0 {
		if probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil {
			if got, err := relay.SetSocketBuffers(probe, rbuf); err == nil && got < rbuf {
				warn(bufferWarning("relay.socket_buffer", rbuf, got))
			}
			_ = probe.Close()
		}
	}
	for _, a := range f.TURN.TCPListen {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fail(fmt.Errorf("turn: listen tcp %s: %w", a, err))
		}
		l.tcp = append(l.tcp, ln)
	}
	for _, a := range f.TURN.TLSListen {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fail(fmt.Errorf("turn: listen tls %s: %w", a, err))
		}
		if sharedWithHTTP(f, a) && l.http == nil {
			l.sharedTLS = append(l.sharedTLS, ln)
			l.http = newHandoffListener(ln.Addr())
			continue
		}
		l.tls = append(l.tls, ln)
	}
	if a := f.HTTP.Listen; a != "" && l.http == nil {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fail(fmt.Errorf("http: listen %s: %w", a, err))
		}
		l.http = ln
	}
	if a := f.Admin.Listen; a != "" {
		ln, err := lc.Listen(ctx, listenNetwork("tcp", a), a)
		if err != nil {
			return fail(fmt.Errorf("admin: listen %s: %w", a, err))
		}
		l.admin = ln
	}
	return l, nil
}

// handoff is relay.Config.HTTPHandoff: nil unless HTTP shares a TLS port with TURN.
func (l *listeners) handoff() func(net.Conn) {
	if h, ok := l.http.(*handoffListener); ok {
		return h.handoff
	}
	return nil
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

// sharedWithHTTP reports whether the TURN TLS address a is also http.listen: one port (443)
// for turns: and the HTTPS API, told apart by ALPN. Port 0 means "any free port", so two
// such entries are two listeners.
func sharedWithHTTP(f *config.File, a string) bool {
	return a == f.HTTP.Listen && !strings.HasSuffix(a, ":0")
}

func portsOf(addrs []net.Addr) []int {
	var out []int
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			out = append(out, int(ap.Port()))
		}
	}
	return out
}

func ports(addrs ...net.Addr) string {
	var parts []string
	for _, p := range portsOf(addrs) {
		parts = append(parts, strconv.Itoa(p))
	}
	return strings.Join(parts, ",")
}

// server is a running Ferry: what serve starts and stops.
type server struct {
	relay     *relay.Server
	alloclog  *alloclog.Log // nil when disabled
	http      *http.Server
	httpDone  chan error
	admin     *http.Server
	adminDone chan error
	socks     *listeners
	log       *slog.Logger
	stopping  atomic.Bool
}

// start opens the sockets and starts the relay. It logs ports, never addresses.
func start(ctx context.Context, f *config.File, logOut io.Writer) (*server, error) {
	log := newLogger(f, logOut)
	if gc := gcPercent(f.Runtime.GOGC, os.Getenv("GOGC")); gc > 0 {
		debug.SetGCPercent(gc)
	}
	if limit, _ := f.Runtime.MemoryLimitBytes(); limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	secrets, path, generated, err := ensureSecret(f)
	if err != nil {
		return nil, err
	}
	if generated {
		hint := "ferry credentials --user alice --ttl 1h"
		if f.Server.DataDir != "" { // credentials must read the same secret file
			dir, _ := filepath.Abs(filepath.Dir(path))
			hint += " --data-dir " + dir
		}
		log.Info("generated a TURN REST secret; mint a credential with: "+hint, "file", path)
	}
	a, err := newAuthenticator(f, secrets)
	if err != nil {
		return nil, err
	}
	bind4, bind6, adv4, adv6, err := relayIPs(f, func(msg string) { log.Warn(msg) })
	if err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry(metrics.ReadBuildInfo())
	certs, err := metrics.NewCertificateExpiry(reg)
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if len(f.TURN.TLSListen) > 0 {
		r, err := newCertReloader(f.TURN.TLSCertFile, f.TURN.TLSKeyFile, func(t time.Time) { certs.Set("turn", t) })
		if err != nil {
			return nil, err
		}
		tlsConf = &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12}
		if f.HTTP.TLSCertFile != "" && slices.ContainsFunc(f.TURN.TLSListen, func(a string) bool { return sharedWithHTTP(f, a) }) {
			// One port for both: the client's SNI picks the HTTP or the TURN certificate.
			h, err := newCertReloader(f.HTTP.TLSCertFile, f.HTTP.TLSKeyFile, func(t time.Time) { certs.Set("http", t) })
			if err != nil {
				return nil, fmt.Errorf("http: %w", err)
			}
			tlsConf.GetCertificate = bySNI(r.get, h.get)
		}
	}
	var allowed, denied []netip.Prefix
	for _, s := range f.Relay.AllowedPeers {
		p, _ := config.ParseCIDR(s)
		allowed = append(allowed, p)
	}
	for _, s := range f.Relay.DeniedPeers {
		p, _ := config.ParseCIDR(s)
		denied = append(denied, p)
	}
	var alog *alloclog.Log
	var events relay.EventSink
	var access signaling.AccessSink
	if f.AllocLog.Enabled {
		dir, err := dataDir(f)
		if err != nil {
			return nil, err
		}
		alog, err = alloclog.Open(ctx, alloclog.Config{Path: filepath.Join(dir, alloclog.FileName),
			Retention: f.AllocLog.Retention, PurgeInterval: f.AllocLog.PurgeInterval,
			QueueLen: f.AllocLog.QueueLength, Registerer: reg, Logger: log})
		if err != nil {
			return nil, err
		}
		events, access = relayEvents{alog}, accessEvents{alog}
	}
	closeLog := func() {
		if alog != nil {
			alog.Close()
		}
	}
	socks, err := openListeners(ctx, f, func(msg string) { log.Warn(msg) })
	if err != nil {
		closeLog()
		return nil, err
	}
	relayBuf, _ := f.Relay.SocketBufferBytes()
	srv, err := relay.New(relay.Config{
		Realm:                 f.TURN.Realm,
		Auth:                  a,
		UDP:                   socks.udp,
		TCP:                   socks.tcp,
		TLS:                   socks.tls,
		SharedTLS:             socks.sharedTLS,
		HTTPHandoff:           socks.handoff(),
		TLSConfig:             tlsConf,
		RelayIPv4:             bind4,
		RelayIPv6:             bind6,
		AdvertisedIPv4:        adv4,
		AdvertisedIPv6:        adv6,
		PortMin:               uint16(f.Relay.PortMin),
		PortMax:               uint16(f.Relay.PortMax),
		AllowedPeers:          allowed,
		DeniedPeers:           denied,
		TCPAllocations:        f.Relay.TCPAllocations,
		StrictAddressFamily:   f.Relay.StrictAddressFamily,
		LegacyChannelNumbers:  f.Relay.LegacyChannels,
		NoPacketMetrics:       !f.Relay.PacketMetrics,
		RelaySocketBuffer:     relayBuf,
		NoGSO:                 !f.Relay.UDPGSO,
		MaxAllocationAge:      f.Relay.MaxAllocationAge,
		MaxAllocations:        f.Relay.MaxAllocations,
		MaxAllocationsPerUser: f.Relay.MaxAllocationsUser,
		MaxPermissions:        f.Relay.MaxPermissions,
		MaxConnectionsPerIP:   f.Relay.MaxConnectionsPerIP,
		MaxConnections:        f.Relay.MaxConnections,
		UnauthRate:            f.Relay.UnauthRate,
		UnauthBurst:           f.Relay.UnauthBurst,
		Registerer:            reg,
		Logger:                log,
		Events:                events,
	})
	if err != nil {
		socks.close()
		closeLog()
		return nil, err
	}
	var udpAddrs, tcpAddrs, tlsAddrs []net.Addr
	for _, s := range socks.udp {
		udpAddrs = append(udpAddrs, s[0].LocalAddr())
	}
	for _, l := range socks.tcp {
		tcpAddrs = append(tcpAddrs, l.Addr())
	}
	for _, l := range slices.Concat(socks.tls, socks.sharedTLS) {
		tlsAddrs = append(tlsAddrs, l.Addr())
	}
	s := &server{relay: srv, alloclog: alog, socks: socks, log: log}
	httpPort := ""
	if socks.http != nil {
		h, err := newHTTPServer(f, a, reg, signaling.BuildURLs(publicHost(f, bind4, adv4),
			portsOf(udpAddrs), portsOf(tcpAddrs), portsOf(tlsAddrs)), func() bool {
			return srv.Ready() && !s.stopping.Load()
		}, access, func(t time.Time) { certs.Set("http", t) }, log)
		if err != nil {
			srv.Close()
			socks.close()
			closeLog()
			return nil, err
		}
		if len(f.API.Keys) == 0 {
			log.Warn("no API keys configured: /v1/ice-servers answers 401; create one with: ferry apikey new --name app")
		}
		if _, shared := socks.http.(*handoffListener); shared {
			h.TLSConfig = nil // the relay's shared listener did the handshake (and picked by SNI)
		}
		s.http, s.httpDone = h, make(chan error, 1)
		go func() { s.httpDone <- serveHTTP(h, socks.http) }()
		httpPort = ports(socks.http.Addr())
	}
	adminPort := ""
	if socks.admin != nil {
		s.admin = &http.Server{
			Handler: metrics.AdminHandler(metrics.AdminConfig{Registry: reg, Pprof: f.Admin.Pprof,
				Ready: func() bool { return srv.Ready() && !s.stopping.Load() }}),
			ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
			ErrorLog: stdlog.New(io.Discard, "", 0),
		}
		s.adminDone = make(chan error, 1)
		go func() { s.adminDone <- s.admin.Serve(socks.admin) }()
		adminPort = ports(socks.admin.Addr())
	}
	log.Info("ferry serving", "udp_ports", ports(udpAddrs...), "tcp_ports", ports(tcpAddrs...),
		"tls_ports", ports(tlsAddrs...), "http_port", httpPort, "admin_port", adminPort,
		"relay_ports", fmt.Sprintf("%d-%d", f.Relay.PortMin, f.Relay.PortMax),
		"relay_ip", relayAddrs(bind4, adv4, bind6, adv6), "udp_sockets", udpSockets(socks),
		"udp_gso", f.Relay.UDPGSO, "gogc", gcSetting(f.Runtime.GOGC), "memory_limit", memLimitSetting())
	return s, nil
}

// defaultGOGC is Ferry's GC target when neither runtime.gogc nor GOGC set one: its heap is
// long-lived allocation state and the relay path allocates nothing per packet, so a tighter
// target costs little CPU and saves memory per allocation (README, Performance).
const defaultGOGC = 50

// gcPercent picks the GC target: runtime.gogc when set, else the GOGC environment variable
// (which the Go runtime already applied: 0 is returned to leave it), else defaultGOGC.
func gcPercent(configured int, env string) int {
	switch {
	case configured > 0:
		return configured
	case env != "":
		return 0
	default:
		return defaultGOGC
	}
}

// udpSockets is the number of SO_REUSEPORT sockets per UDP listen address.
func udpSockets(l *listeners) int {
	if len(l.udp) == 0 {
		return 0
	}
	return len(l.udp[0])
}

// gcSetting describes the GC target in effect, for the start-up line.
func gcSetting(configured int) string {
	if gc := gcPercent(configured, os.Getenv("GOGC")); gc > 0 {
		return strconv.Itoa(gc)
	}
	return os.Getenv("GOGC") + " (GOGC)"
}

// memLimitSetting describes the Go memory limit in effect, for the start-up line.
func memLimitSetting() string {
	if l := debug.SetMemoryLimit(-1); l < math.MaxInt64 {
		return strconv.FormatInt(l>>20, 10) + "MiB"
	}
	return "none"
}

// bufferWarning says that the kernel granted got of the asked socket buffer bytes, and how to
// raise its cap.
func bufferWarning(key string, asked, got int) string {
	return fmt.Sprintf("%s: the kernel capped socket buffers at %d of the %d bytes asked for; "+
		"bursts may be dropped (ferry_turn_dropped_packets_total does not see kernel drops, netstat -su does). "+
		"Raise the cap: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d (deploy/sysctl/99-ferry.conf)",
		key, got, asked, asked, asked)
}

// relayAddrs describes Ferry's own relay addresses for the start-up log line (the server's
// addresses, published in every relay candidate; never a client's).
func relayAddrs(bind4, adv4, bind6, adv6 netip.Addr) string {
	var parts []string
	for _, p := range [][2]netip.Addr{{bind4, adv4}, {bind6, adv6}} {
		switch {
		case !p[0].IsValid():
		case p[1].IsValid():
			parts = append(parts, p[0].String()+" advertised as "+p[1].String())
		default:
			parts = append(parts, p[0].String())
		}
	}
	return strings.Join(parts, ", ")
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
		return fmt.Errorf("turn: TLS certificate: %w", err)
	}
	r.cert = &c
	r.modTime = latestModTime(r.certFile, r.keyFile)
	if r.expiry != nil {
		leaf := c.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return fmt.Errorf("turn: TLS certificate: %w", err)
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
