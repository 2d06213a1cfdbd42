package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
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

// busyTime returns the CPU time all CPUs spent outside idle and iowait since boot (the "cpu"
// line of /proc/stat): with the servers' and the benchmark's own, it tells how much of a run
// other work on the machine took.
func busyTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("bad /proc/stat")
	}
	var ticks int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// loadAvg1 returns the 1-minute load average.
func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// cpuSample is the CPU time of the processes a run involves and of the whole machine.
type cpuSample struct {
	at     time.Time
	server time.Duration
	self   time.Duration // this process: load generator and echo peer
	client time.Duration // an external load generator (uclient), if any
	busy   time.Duration
}

func sampleCPU(serverPID, clientPID int) cpuSample {
	s := cpuSample{at: time.Now()}
	s.server, _ = cpuTime(serverPID)
	s.self, _ = cpuTime(os.Getpid())
	if clientPID > 0 {
		s.client, _ = cpuTime(clientPID)
	}
	s.busy, _ = busyTime()
	return s
}

// cpuDelta is what a run cost: the server, the load generators, and everyone else (as a
// share of the machine's CPUs: the noise indicator of a shared machine).
type cpuDelta struct {
	elapsed              time.Duration
	server, self, client time.Duration
	otherPct             float64
}

func (a cpuSample) to(b cpuSample) cpuDelta {
	d := cpuDelta{elapsed: b.at.Sub(a.at), server: b.server - a.server, self: b.self - a.self, client: b.client - a.client}
	other := (b.busy - a.busy) - d.server - d.self - d.client
	if d.elapsed > 0 {
		d.otherPct = max(0, 100*other.Seconds()/(d.elapsed.Seconds()*float64(runtime.NumCPU())))
	}
	return d
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
