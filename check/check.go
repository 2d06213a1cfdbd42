// Package check verifies a TURN server from outside, as a browser behind a clinic's firewall
// would use it: for each ICE server URL a STUN Binding, two allocations, permissions and a
// relayed round trip between them, Refresh and deletion, and for turns: the certificate;
// with pion/turn's client. `ferry check` prints its results.
package check

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// Step names, in the order Run takes them.
const (
	StepConnect    = "connect"    // TCP connection (turn:?transport=tcp and turns:)
	StepTLS        = "tls"        // handshake and certificate (turns:)
	StepBinding    = "binding"    // STUN Binding: the mapped (server-reflexive) address
	StepAllocate   = "allocate"   // two allocations (RFC 8656 §7)
	StepPermission = "permission" // each allocation permits the other's relayed address (§9)
	StepRoundTrip  = "round trip" // a datagram each way between the two relayed addresses
	StepRefresh    = "refresh"    // Refresh with LIFETIME 600 s (§8)
	StepDelete     = "delete"     // Refresh with LIFETIME 0 for both, then 437 for a third
)

// DefaultTimeout bounds each step when Options names no timeout.
const DefaultTimeout = 5 * time.Second

// Target is one ICE server URL to check, with the credential for turn: and turns:.
type Target struct {
	URL      string // stun:, turn: or turns: URL (RFC 7064, RFC 7065)
	Username string // TURN long-term credential; ignored for stun:
	Password string
}

// Options configure Run.
type Options struct {
	// Timeout bounds each step (a connection, a handshake, a transaction, a round trip);
	// zero means DefaultTimeout.
	Timeout time.Duration
	// RootCAs verify turns: certificates; nil means the system's roots.
	RootCAs *x509.CertPool
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
	// Dial opens TCP connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

func (o Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Step is one step of a check and how it went.
type Step struct {
	Name     string        `json:"name"`
	OK       bool          `json:"ok"`
	Duration time.Duration `json:"-"`
	Millis   float64       `json:"ms"`               // Duration in milliseconds
	Detail   string        `json:"detail,omitempty"` // what was learnt (addresses, lifetimes, the certificate)
	Error    string        `json:"error,omitempty"`  // why it failed, one line
}

// Result is the check of one URL: the steps taken, in order, up to the first failure.
type Result struct {
	URL       string `json:"url"`
	Transport string `json:"transport"` // "udp", "tcp" or "tls"
	OK        bool   `json:"ok"`
	// Failure is the one-line reason when not OK: "<step>: <why>".
	Failure        string       `json:"failure,omitempty"`
	MappedAddress  string       `json:"mappedAddress,omitempty"`
	RelayedAddress string       `json:"relayedAddress,omitempty"`
	Certificate    *Certificate `json:"certificate,omitempty"`
	Steps          []Step       `json:"steps"`
}

// Run checks one target and never panics on a bad server: every problem ends in a failed
// step. ctx ends the check early.
func Run(ctx context.Context, t Target, o Options) Result {
	r := &run{res: Result{URL: t.URL}, opts: o}
	u, err := stun.ParseURI(t.URL)
	if err != nil {
		r.res.Transport = "?"
		r.fail("url", 0, fmt.Errorf("%q is not a stun:, turn: or turns: URL: %v", t.URL, err))
		return r.res
	}
	r.uri, r.target = u, t
	r.res.Transport = transportOf(u)
	defer r.closeAll()
	if !r.connect(ctx) || !r.binding(ctx) {
		return r.res
	}
	if u.Scheme == stun.SchemeTypeSTUN || u.Scheme == stun.SchemeTypeSTUNS {
		r.res.OK = true
		return r.res
	}
	if t.Username == "" {
		r.fail(StepAllocate, 0, errors.New("no credential: give a secret, a username and password, or an ICE-servers URL and API key"))
		return r.res
	}
	if r.allocate(ctx) && r.permission(ctx) && r.roundTrip() && r.refresh(ctx) && r.delete(ctx) {
		r.res.OK = true
	}
	return r.res
}

// transportOf names how a client reaches the server for u.
func transportOf(u *stun.URI) string {
	switch {
	case u.Scheme == stun.SchemeTypeTURNS || u.Scheme == stun.SchemeTypeSTUNS:
		return "tls"
	case u.Proto == stun.ProtoTypeTCP:
		return "tcp"
	}
	return "udp"
}

// run is the state of one check: the URL, two clients with their allocations, the result.
type run struct {
	uri     *stun.URI
	target  Target
	opts    Options
	res     Result
	server  string // host:port as dialled
	clients [2]*client
}

func (r *run) pass(name string, d time.Duration, detail string) {
	r.res.Steps = append(r.res.Steps, Step{Name: name, OK: true, Duration: d, Millis: millis(d), Detail: detail})
}

func (r *run) fail(name string, d time.Duration, err error) bool {
	msg := err.Error()
	r.res.Steps = append(r.res.Steps, Step{Name: name, Duration: d, Millis: millis(d), Error: msg})
	r.res.Failure = name + ": " + msg
	return false
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// connect opens the first client's connection (and checks the certificate for turns:).
func (r *run) connect(ctx context.Context) bool {
	r.server = net.JoinHostPort(r.uri.Host, strconv.Itoa(r.uri.Port))
	c, ok := r.dial(ctx, true)
	r.clients[0] = c
	return ok
}

// dial opens a client: a UDP socket, or a TCP connection, with a TLS handshake for
// turns:. report records the connect and tls steps (the first client's only).
func (r *run) dial(ctx context.Context, report bool) (*client, bool) {
	record := func(name string, d time.Duration, detail string, err error) bool {
		if err != nil {
			return r.fail(name, d, err)
		}
		if report {
			r.pass(name, d, detail)
		}
		return true
	}
	if r.res.Transport == "udp" {
		addr, err := net.DefaultResolver.LookupNetIP(ctx, "ip", r.uri.Host)
		if err != nil || len(addr) == 0 {
			return nil, record(StepBinding, 0, "", fmt.Errorf("cannot resolve %s: %v", r.uri.Host, err))
		}
		raddr := &net.UDPAddr{IP: addr[0].AsSlice(), Port: r.uri.Port}
		network := "udp4"
		if addr[0].Is6() && !addr[0].Is4In6() {
			network = "udp6"
		}
		pc, err := net.ListenPacket(network, ":0")
		if err != nil {
			return nil, record(StepBinding, 0, "", fmt.Errorf("open a UDP socket: %v", err))
		}
		c, err := newClient(pc, raddr.String(), r.target)
		if err != nil {
			_ = pc.Close()
			return nil, record(StepBinding, 0, "", err)
		}
		return c, true
	}
	dial := r.opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, r.opts.timeout())
	start := time.Now()
	conn, err := dial(dctx, "tcp", r.server)
	cancel()
	if err != nil {
		return nil, record(StepConnect, time.Since(start), "", connectError(r.server, err))
	}
	if !record(StepConnect, time.Since(start), "to "+conn.RemoteAddr().String(), nil) {
		_ = conn.Close()
		return nil, false
	}
	if r.res.Transport == "tls" {
		start = time.Now()
		tc, cert, err := handshake(ctx, conn, r.uri.Host, r.opts)
		if report {
			r.res.Certificate = cert
		}
		if err != nil {
			_ = conn.Close()
			return nil, record(StepTLS, time.Since(start), "", err)
		}
		if !record(StepTLS, time.Since(start), cert.summary(), nil) {
			_ = tc.Close()
			return nil, false
		}
		conn = tc
	}
	c, err := newClient(turn.NewSTUNConn(conn), r.server, r.target)
	if err != nil {
		_ = conn.Close()
		return nil, record(StepConnect, 0, "", err)
	}
	return c, true
}

// connectError explains a failed TCP connection.
func connectError(server string, err error) error {
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &op) && op.Timeout():
		return fmt.Errorf("no answer from %s within the timeout: a firewall may drop the connection, or nothing listens there", server)
	case errors.Is(err, errRefused):
		return fmt.Errorf("connection to %s refused: nothing listens there (is turn.tcp_listen or turn.tls_listen set?), or a firewall rejects it", server)
	}
	return fmt.Errorf("cannot connect to %s: %v", server, err)
}

// closeAll deletes what is left of the allocations and closes the connections.
func (r *run) closeAll() {
	for _, c := range r.clients {
		if c != nil {
			c.close()
		}
	}
}

// quietLogs keeps pion's client silent: failures are reported as steps.
func quietLogs() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}
