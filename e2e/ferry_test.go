// Package e2e runs Ferry as users do, the real binary with real clients: coturn's
// turnutils_uclient, pion/webrtc and headless Chromium.
package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	ferryBin  string
	buildErr  error
)

// ferryBinary builds cmd/ferry once per test run.
func ferryBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		ferryBin = filepath.Join(dir, "ferry")
		out, err := exec.Command("go", "build", "-race", "-o", ferryBin, "../cmd/ferry").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ferryBin
}

// syncBuffer collects a process's output safely.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ferryProc is a running `ferry serve`.
type ferryProc struct {
	cmd       *exec.Cmd
	log       *syncBuffer
	dataDir   string
	udpPort   int
	tcpPort   int
	tlsPort   int
	httpPort  int
	adminPort int
	exited    chan struct{}
	exitErr   error
	stopOnce  sync.Once
}

// servingLine finds the ports in the "ferry serving" line; a transport with several ports
// lists them with commas (its first is taken).
var servingLine = regexp.MustCompile(`udp_ports="?([\d,]*)"? tcp_ports="?([\d,]*)"? tls_ports="?([\d,]*)"? http_port="?(\d*)"? admin_port="?(\d*)`)

// startFerry runs `ferry serve --config <yaml>` with a fresh data directory and waits for it
// to serve. Listen addresses in yaml use port 0; the chosen ports come from the log line.
// The HTTP listener is disabled unless yaml sets http.listen.
func startFerry(t *testing.T, yaml string, env ...string) *ferryProc {
	t.Helper()
	dir := t.TempDir()
	return startFerryAt(t, filepath.Join(dir, "ferry.yaml"), filepath.Join(dir, "data"), yaml, env...)
}

// startFerryIn is startFerry with dir/ferry.yaml and dir/data: a restart keeps the data
// directory (secrets, room signing key).
func startFerryIn(t *testing.T, dir, yaml string, env ...string) *ferryProc {
	t.Helper()
	return startFerryAt(t, filepath.Join(dir, "ferry.yaml"), filepath.Join(dir, "data"), yaml, env...)
}

// startFerryAt is startFerry with the configuration file and data directory given: tests
// that rewrite the file for a reload, or prepare the directory.
func startFerryAt(t *testing.T, cfg, dataDir, yaml string, env ...string) *ferryProc {
	t.Helper()
	return startFerryWrapped(t, nil, cfg, dataDir, yaml, env...)
}

// startFerryWrapped is startFerryAt with ferry run through wrap, a command prefix that execs
// it (such as `ip netns exec NAME`: the process is still ferry's, for signals).
func startFerryWrapped(t *testing.T, wrap []string, cfg, dataDir, yaml string, env ...string) *ferryProc {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &ferryProc{log: &syncBuffer{}, dataDir: dataDir, exited: make(chan struct{})}
	args := append(append([]string(nil), wrap...), ferryBinary(t), "serve", "--config", cfg, "--data-dir", p.dataDir)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = os.Environ()
	// No fixed ports in tests: the HTTP and admin listeners are off unless yaml sets them.
	if !strings.Contains(yaml, "http:") {
		p.cmd.Env = append(p.cmd.Env, "FERRY_HTTP_LISTEN=")
	}
	if !strings.Contains(yaml, "admin:") {
		p.cmd.Env = append(p.cmd.Env, "FERRY_ADMIN_LISTEN=")
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout = io.MultiWriter(p.log, pw)
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("ferry log:\n%s", p.log.String())
		}
	})
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m
			}
		}
	}()
	select {
	case m := <-ready:
		p.udpPort = firstPort(m[1])
		p.tcpPort = firstPort(m[2])
		p.tlsPort = firstPort(m[3])
		p.httpPort, _ = strconv.Atoi(m[4])
		p.adminPort, _ = strconv.Atoi(m[5])
	case <-p.exited:
		t.Fatalf("ferry exited early: %v\n%s", p.exitErr, p.log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("ferry did not start\n%s", p.log.String())
	}
	return p
}

// firstPort returns the first of a comma-separated list of ports, or 0.
func firstPort(list string) int {
	first, _, _ := strings.Cut(list, ",")
	n, _ := strconv.Atoi(first)
	return n
}

// stop sends SIGINT (stop now: no drain) and waits; ferry must exit 0.
func (p *ferryProc) stop(t *testing.T) {
	p.signal(t, syscall.SIGINT)
}

// signal sends sig, once per process (the first of stop and signal wins), and waits for
// the exit.
func (p *ferryProc) signal(t *testing.T, sig os.Signal) {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("ferry did not stop within 15s of %v", sig)
		}
	})
}

func (p *ferryProc) secret(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dataDir, "turn-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// startEcho runs a UDP echo peer on 127.0.0.2 until the test ends.
func startEcho(t *testing.T) *net.UDPConn {
	t.Helper()
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2000)
		for {
			n, a, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], a)
		}
	}()
	t.Cleanup(func() { _ = echo.Close(); <-done })
	return echo
}

// freeUDPPort returns a port that was free on ip a moment ago (for programs that cannot
// bind port 0 and report it).
func freeUDPPort(t *testing.T, ip string) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if testing.Short() {
			t.Skipf("%s not installed (-short)", name)
		}
		t.Fatalf("%s not installed: .ci/run installs it (apt-get install coturn); see README", name)
	}
	return p
}

// SIGTERM stops a serving Ferry cleanly: exit status 0 and a "stopped" log line. The process
// log never carries a client's address or username.
func TestServeStopsCleanlyOnSIGTERM(t *testing.T) {
	p := startFerry(t, "turn:\n  udp_listen: [\"127.0.0.1:0\"]\n  tcp_listen: [\"127.0.0.1:0\"]\nrelay:\n  bind_ip: 127.0.0.1\n")
	p.signal(t, syscall.SIGTERM) // nothing to drain: stops at once
	if p.exitErr != nil {
		t.Fatalf("exit: %v\n%s", p.exitErr, p.log.String())
	}
	if !strings.Contains(p.log.String(), "msg=stopped") {
		t.Fatalf("no clean stop in log:\n%s", p.log.String())
	}
}
