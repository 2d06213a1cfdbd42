package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v4"
)

// server is a relay under test.
type server struct {
	name   string
	turn   bool   // speaks TURN (false: the raw forwarder)
	secret string // TURN REST secret
	ports  map[string]int
	admin  int // Ferry's admin port (for a GC before RSS readings)
	p      *proc
}

func (s *server) addr(transport string) string {
	return "127.0.0.1:" + strconv.Itoa(s.ports[transport])
}

const benchSecret = "bench-secret-0123456789abcdef"

// writeCert writes a throwaway self-signed certificate for the TLS runs.
func writeCert(dir string) (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench.ferry.test"},
		DNSNames: []string{"bench.ferry.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	return cert, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// waitLine reads r until re matches a line, and returns the submatches.
func waitLine(r io.Reader, re *regexp.Regexp, p *proc) ([]string, error) {
	found := make(chan []string, 1)
	var mu sync.Mutex
	var seen []string
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			mu.Lock()
			seen = append(seen, sc.Text())
			mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
				break
			}
		}
		_, _ = io.Copy(io.Discard, r) // keep the pipe drained
	}()
	select {
	case m := <-found:
		return m, nil
	case <-p.done:
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("%s exited during start-up:\n%s", p.name, strings.Join(seen, "\n"))
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%s did not start", p.name)
	}
}

var ferryServing = regexp.MustCompile(`udp_ports=(\d+) tcp_ports=(\d+) tls_ports=(\d+) http_port="?"? admin_port=(\d+)`)

// startFerry runs the ferry binary with metrics and the allocation log on (as in production),
// or with both off (monitoring=false), to measure what they cost.
func startFerry(bin, dir, cert, key string, monitoring bool) (*server, error) {
	cfg := fmt.Sprintf(`log:
  level: warn
turn:
  realm: bench
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
  tls_listen: ["127.0.0.1:0"]
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
  port_min: 40000
  port_max: 59999
  allowed_peers: [127.0.0.2/32]
  # All load comes from one address: the per-source limit on unauthenticated answers
  # would measure itself.
  unauth_rate: -1
  # The load generators make many allocations under one user id (uclient's -u); coturn
  # sets no per-user cap by default either.
  max_allocations_per_user: 0
  # coturn's turnutils_uclient (the paced phase) picks channel numbers up to 0x7FFF.
  legacy_channel_numbers: true
  packet_metrics: %t
auth:
  secrets: [%s]
http:
  listen: ""
admin:
  listen: "127.0.0.1:0"
  pprof: true
alloclog:
  enabled: %t
`, cert, key, monitoring, benchSecret, monitoring)
	path := filepath.Join(dir, fmt.Sprintf("ferry-%t.yaml", monitoring))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", path, "--data-dir", filepath.Join(dir, fmt.Sprintf("data-%t", monitoring)))
	// The start-up line is logged at info level; raise the level only for it.
	cmd.Env = benchEnv("FERRY_LOG_LEVEL=info")
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p, err := startProc("ferry", cmd)
	if err != nil {
		return nil, err
	}
	m, err := waitLine(out, ferryServing, p)
	if err != nil {
		p.stop()
		return nil, err
	}
	s := &server{name: "ferry", turn: true, secret: benchSecret, p: p, ports: map[string]int{}}
	s.ports["udp"], _ = strconv.Atoi(m[1])
	s.ports["tcp"], _ = strconv.Atoi(m[2])
	s.ports["tls"], _ = strconv.Atoi(m[3])
	s.admin, _ = strconv.Atoi(m[4])
	if !monitoring {
		s.name = "ferry-nomon"
	}
	return s, nil
}

// gc asks Ferry's runtime for a collection (pprof's heap endpoint with gc=1), so RSS readings
// are not inflated by garbage that is merely waiting.
func (s *server) gc() {
	if s.admin == 0 {
		return
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", s.admin))
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// freeUDPAndTCPPort returns a port free for UDP and for TCP on 127.0.0.1 at this moment.
func freeUDPAndTCPPort() (int, error) {
	for range 50 {
		port, err := freePort("udp")
		if err != nil {
			return 0, err
		}
		if l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			_ = l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both UDP and TCP")
}

func freePort(network string) (int, error) {
	switch network {
	case "udp":
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	default:
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
}

// startCoturn runs Debian's turnserver with REST credentials, TLS, two relay threads (one
// per CPU, its default) and the same peer allowance.
func startCoturn(bin, dir, cert, key string) (*server, error) {
	port, err := freeUDPAndTCPPort() // coturn listens on both
	if err != nil {
		return nil, err
	}
	tlsPort, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`listening-ip=127.0.0.1
listening-port=%d
tls-listening-port=%d
relay-ip=127.0.0.1
min-port=20000
max-port=39999
use-auth-secret
static-auth-secret=%s
realm=bench
cert=%s
pkey=%s
no-tlsv1
no-tlsv1_1
no-dtls
no-cli
no-rfc5780
no-stun-backward-compatibility
allow-loopback-peers
allowed-peer-ip=127.0.0.2
no-stdout-log
log-file=%s
pidfile=%s
userdb=%s
`, port, tlsPort, benchSecret, cert, key, filepath.Join(dir, "coturn.log"),
		filepath.Join(dir, "coturn.pid"), filepath.Join(dir, "coturn.db"))
	path := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc("coturn", exec.Command(bin, "-c", path))
	if err != nil {
		return nil, err
	}
	s := &server{name: "coturn", turn: true, secret: benchSecret, p: p,
		ports: map[string]int{"udp": port, "tcp": port, "tls": tlsPort}}
	if err := waitSTUN(s.addr("udp"), p); err != nil {
		p.stop()
		return nil, err
	}
	return s, nil
}

// waitSTUN waits until a Binding request on addr is answered.
func waitSTUN(addr string, p *proc) error {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 512)
	for range 100 {
		if p.exited() {
			return fmt.Errorf("%s exited during start-up", p.name)
		}
		_, _ = c.Write(req.Raw)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s does not answer STUN on %s", p.name, addr)
}

// startRaw runs this benchmark binary as the raw forwarder.
// startRaw runs the raw forwarder ("raw": recvmmsg/sendmmsg; "raw-gso": and UDP GSO).
func startRaw(self, peer string, gso bool) (*server, error) {
	name := "raw"
	if gso {
		name = "raw-gso"
	}
	cmd := exec.CommandContext(context.Background(), self, "-raw-forwarder", "-peer", peer, fmt.Sprintf("-gso=%t", gso))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p, err := startProc(name, cmd)
	if err != nil {
		return nil, err
	}
	m, err := waitLine(out, regexp.MustCompile(`udp_port=(\d+)`), p)
	if err != nil {
		p.stop()
		return nil, err
	}
	port, _ := strconv.Atoi(m[1])
	return &server{name: name, p: p, ports: map[string]int{"udp": port}}, nil
}
