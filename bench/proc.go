package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
const clockTicks = 100

// cpuTime returns a process's user+system CPU time from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields start after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14 overall
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// rssKiB returns a process's resident set size (VmRSS) in KiB.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// proc is a process the benchmark started (a server, or coturn's uclient), stopped only by
// its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// ownSession starts every process in a session of its own (setsid), as a service manager
// starts a daemon. Off (-setsid=false), they all stay in the benchmark's session. Either way
// every server is started alike, which is what makes them comparable: with the kernel's
// autogroup scheduling (CONFIG_SCHED_AUTOGROUP, on by default) each session is one
// scheduling entity, so a server in a session of its own competes with the load generator
// as a group (one fair share for all its threads, other wake-up preemption), while one in
// the benchmark's session competes thread by thread. A server started with setsid and
// another without are measured under different schedulers.
var ownSession = true

// startProc starts cmd the one way every server and client of the benchmark is started: the
// same session rule (ownSession), this process's niceness and CPU affinity (inherited, never
// changed), the environment of benchEnv, and SIGKILL should the benchmark die.
func startProc(name string, cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: ownSession}
	if cmd.Env == nil {
		cmd.Env = benchEnv()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// benchEnv is the environment of every process the benchmark starts, plus extra: this
// process's, without the Go runtime's knobs (GOMAXPROCS, GOGC, GOMEMLIMIT, GODEBUG) that a
// developer's shell may carry. Each server then sizes itself to the machine by its own
// default (Go: GOMAXPROCS = CPUs; coturn: one relay thread per CPU) and takes the rest from
// its config file, as deployed; no server gets a setting the others do not. BENCH_SERVER_ENV
// ("K=V K=V", for example GODEBUG=schedtrace=1000 while profiling) is added to every one.
func benchEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, strings.Fields(os.Getenv("BENCH_SERVER_ENV"))...)
	return append(env, extra...)
}

// stop sends SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
