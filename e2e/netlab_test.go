package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// netLab is a small network of its own for a test: three network namespaces joined by veth
// pairs on 198.18.0.0/15 (RFC 2544 benchmarking space), with no route to anything else.
//
//	client (198.18.1.2) ── server (198.18.1.1 | 198.18.2.1) ── far (198.18.2.2)
//
// The server does not forward, so the client and the far side reach each other only
// through a relay on the server. The lab is removed when the test ends, fails, or is
// interrupted (SIGINT, SIGTERM); namespaces left by a test that was killed outright are
// removed by the next one.
type netLab struct {
	t      *testing.T
	prefix string // "ffw-<pid>-"
	ip     string // the ip command
	nft    string // the nft command

	mu     sync.Mutex
	procs  []*os.Process // started in the lab: killed before the namespaces go
	closed bool
}

// Lab roles and addresses.
const (
	labClient   = "client"
	labServer   = "server"
	labFar      = "far"
	labServerIP = "198.18.1.1" // the server's address on the client's link (Ferry's)
	labClientIP = "198.18.1.2"
	labFarIP    = "198.18.2.2"
	labPrefix   = "ffw-"
)

// newNetLab builds the lab, or skips the test with the reason when it cannot: not root, or
// ip/nft missing (make test-deps installs iproute2 and nftables).
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespace test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the firewall test builds network namespaces and nftables rules: it needs root (CI runs it as root)")
	}
	l := &netLab{t: t, prefix: fmt.Sprintf("%s%d-", labPrefix, os.Getpid())}
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"nft", "nftables"}} {
		p, err := exec.LookPath(tool.name)
		if err != nil {
			t.Skipf("%s is not installed and could not be installed: make test-deps installs %s", tool.name, tool.pkg)
		}
		if tool.name == "ip" {
			l.ip = p
		} else {
			l.nft = p
		}
	}
	removeStaleLabs(l.ip)
	t.Cleanup(l.close)
	sigs := make(chan os.Signal, 1)
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		if !signal.Ignored(sig) { // a signal the process was started to ignore stays ignored
			signal.Notify(sigs, sig)
		}
	}
	done := make(chan struct{})
	t.Cleanup(func() { signal.Stop(sigs); close(done) })
	go func() {
		select {
		case sig := <-sigs: // interrupted: remove the lab, then die of the signal as before
			l.close()
			signal.Stop(sigs)
			_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-done:
		}
	}()
	s, c, f := l.ns(labServer), l.ns(labClient), l.ns(labFar)
	for _, step := range [][]string{
		{"netns", "add", s}, {"netns", "add", c}, {"netns", "add", f},
		{"-n", c, "link", "add", "to-server", "type", "veth", "peer", "name", "to-client", "netns", s},
		{"-n", f, "link", "add", "to-server", "type", "veth", "peer", "name", "to-far", "netns", s},
		{"-n", s, "addr", "add", labServerIP + "/24", "dev", "to-client"},
		{"-n", s, "addr", "add", "198.18.2.1/24", "dev", "to-far"},
		{"-n", c, "addr", "add", labClientIP + "/24", "dev", "to-server"},
		{"-n", f, "addr", "add", labFarIP + "/24", "dev", "to-server"},
		{"-n", s, "link", "set", "lo", "up"}, {"-n", c, "link", "set", "lo", "up"}, {"-n", f, "link", "set", "lo", "up"},
		{"-n", s, "link", "set", "to-client", "up"}, {"-n", s, "link", "set", "to-far", "up"},
		{"-n", c, "link", "set", "to-server", "up"}, {"-n", f, "link", "set", "to-server", "up"},
		// The far side reaches the server's address on the client link through the server.
		{"-n", f, "route", "add", "198.18.1.0/24", "via", "198.18.2.1"},
		{"netns", "exec", s, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"},
	} {
		if out, err := exec.Command(l.ip, step...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(step, " "), err, out)
		}
	}
	return l
}

// ns returns the namespace name of a role.
func (l *netLab) ns(role string) string { return l.prefix + role }

// wrap returns the command prefix that runs a program in role's namespace.
func (l *netLab) wrap(role string) []string { return []string{l.ip, "netns", "exec", l.ns(role)} }

// command returns a command that runs in role's namespace; the lab kills it on close.
func (l *netLab) command(role, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(l.ip, append([]string{"netns", "exec", l.ns(role), name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // `ip netns exec` execs: this is the program
	return cmd
}

// track has the lab kill p (started in a namespace) before it removes the namespaces.
func (l *netLab) track(p *os.Process) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
}

// run runs a command in role's namespace and returns its combined output.
func (l *netLab) run(role, name string, args ...string) (string, error) {
	out, err := l.command(role, name, args...).CombinedOutput()
	return string(out), err
}

// Firewall modes of the client's namespace. Each drops all UDP and all TCP except to port
// 443, like a hospital network; on 443 the first bytes of a connection decide, as an
// inspecting firewall does: tlsOnly lets only TLS through (a ClientHello starts with
// 0x16), noTLS everything but TLS (a proxy that breaks TLS to unknown hosts), port443
// everything.
const (
	fwTLSOnly = "tls-only"
	fwNoTLS   = "no-tls"
	fw443     = "port-443"
)

// firewall replaces the client's nftables table with mode's rules.
func (l *netLab) firewall(mode string) {
	l.t.Helper()
	drop := map[string]string{
		fwTLSOnly: "ct mark 2 counter drop comment \"not TLS\"",
		fwNoTLS:   "ct mark 1 counter drop comment \"TLS\"",
		fw443:     "",
	}[mode]
	rules := fmt.Sprintf(`table inet ferryfw
delete table inet ferryfw
table inet ferryfw {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    meta l4proto udp counter drop comment "UDP"
    tcp dport != 443 counter drop comment "TCP not to 443"
    tcp dport 443 ct mark 0 @ih,0,8 0x16 ct mark set 1
    tcp dport 443 ct mark 0 @ih,0,8 != 0x16 ct mark set 2
    %s
    counter accept
  }
}
`, drop)
	cmd := l.command(labClient, l.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft (%s): %v\n%s", mode, err, out)
	}
}

// dropped returns the client firewall's drop counters by comment, e.g. {"UDP": 12}.
func (l *netLab) dropped() map[string]int {
	out, _ := l.run(labClient, l.nft, "list", "table", "inet", "ferryfw")
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := range f {
			if f[i] == "packets" && i+1 < len(f) && strings.Contains(line, "comment") {
				n, _ := strconv.Atoi(f[i+1])
				got[strings.Trim(line[strings.Index(line, "comment")+8:], `" `)] = n
			}
		}
	}
	return got
}

// close kills what runs in the lab and removes its namespaces (and with them the veth
// pairs and the nftables table). Idempotent.
func (l *netLab) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		_ = p.Kill()
	}
	for _, role := range []string{labClient, labFar, labServer} {
		_ = exec.Command(l.ip, "netns", "del", l.ns(role)).Run()
	}
}

// removeStaleLabs removes the namespaces of labs whose test process is gone (killed without
// a chance to clean up).
func removeStaleLabs(ip string) {
	out, err := exec.Command(ip, "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, labPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = exec.Command(ip, "netns", "del", name).Run()
		}
	}
}
