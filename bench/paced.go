package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The paced phase: coturn's turnutils_uclient sends through the relay to the echo peer at a
// steady rate, a packet at a time per allocation, as calls do (rather than the saturating
// bursts of the capacity phase). The figure is the server's CPU per relayed packet.

const (
	// pacedInterval is each uclient allocation's packet interval (-z, ms).
	pacedInterval = 4 * time.Millisecond
	// pacedSpread: uclient starts each allocation's sending at a random time 1-6 s after it
	// has connected them all; 5 s after the first datagram reaches the echo peer every
	// allocation is sending.
	pacedSpread = 5200 * time.Millisecond
	// pacedNoisy: a run during which other processes took more than this share of the
	// CPUs (%) is run again, at most pacedNoisyRetries times.
	pacedNoisy        = 10.0
	pacedNoisyRetries = 2
)

// Paced is the paced-load measurement of one server at one datagram size, one entry per run.
type Paced struct {
	Server     string  `json:"server"`
	Size       int     `json:"size"`
	Clients    int     `json:"allocations"`
	IntervalMS int     `json:"interval_ms"`
	OfferedPPS float64 `json:"offered_packets_per_s"` // uclient's send rate once all allocations send
	// Per run: packets the server relayed per second in the steady window (two per datagram
	// the echo peer sent back), its CPU per relayed packet (µs), uclient's loss over the
	// whole run (%), uclient's CPU per relayed packet (µs), and the share of the machine's
	// CPUs other processes took during the window (%).
	RelayedPPS []float64 `json:"relayed_packets_per_s"`
	CPUus      []float64 `json:"server_cpu_us_per_packet"`
	LossPct    []float64 `json:"loss_pct"`
	ClientCPU  []float64 `json:"uclient_cpu_us_per_packet"`
	OtherPct   []float64 `json:"other_cpu_pct"`
	Load1      []float64 `json:"load_avg_1m_at_start"`
	Skipped    string    `json:"skipped,omitempty"`
}

var (
	uclientTotals = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	uclientLost   = regexp.MustCompile(`Total lost packets (\d+) \(`)
)

// paced runs the paced case on every TURN server given, runs interleaved (server A, B, A, B
// ...) so that drift on the machine touches all alike.
func (b *bench) paced(servers []*server) {
	if !slices.Contains(b.phases, "paced") {
		return
	}
	uclient, err := exec.LookPath("turnutils_uclient")
	clients := max(1, int(math.Round(b.pacedPPS*pacedInterval.Seconds())))
	res := map[[2]int]*Paced{}
	for i, s := range servers {
		for _, size := range sizes {
			p := &Paced{Server: s.name, Size: size, Clients: clients, IntervalMS: int(pacedInterval / time.Millisecond),
				OfferedPPS: float64(clients) / pacedInterval.Seconds()}
			if err != nil {
				p.Skipped = "turnutils_uclient not installed (apt-get install coturn)"
			}
			res[[2]int{i, size}] = p
		}
	}
	for range b.pacedRuns {
		for _, size := range sizes {
			for i, s := range servers {
				p := res[[2]int{i, size}]
				if p.Skipped != "" {
					continue
				}
				// A run during which other processes took much of the machine is noise (and
				// flatters the server: a delayed server batches more), and uclient sometimes
				// fails on its own (it picks a channel number twice): run it again, a few
				// times at most.
				var r pacedResult
				var err error
				for try := 0; try <= pacedNoisyRetries; try++ {
					if r, err = b.pacedRun(s, uclient, p); err == nil && r.otherPct <= pacedNoisy {
						break
					}
					if try == pacedNoisyRetries {
						break
					}
					if err != nil {
						fmt.Fprintf(os.Stderr, "  %-11s paced %4d B: %s, run again\n", s.name, size, firstLine(err.Error()))
					} else {
						fmt.Fprintf(os.Stderr, "  %-11s paced %4d B: others took %.0f%% of the CPUs, run again\n", s.name, size, r.otherPct)
					}
					time.Sleep(5 * time.Second)
				}
				if err != nil {
					p.Skipped = err.Error()
					fmt.Fprintf(os.Stderr, "  %-11s paced %4d B: %v\n", s.name, size, err)
					continue
				}
				p.RelayedPPS = append(p.RelayedPPS, r.relayedPPS)
				p.CPUus = append(p.CPUus, r.cpuUs)
				p.ClientCPU = append(p.ClientCPU, r.clientUs)
				p.LossPct = append(p.LossPct, r.lossPct)
				p.OtherPct = append(p.OtherPct, r.otherPct)
				p.Load1 = append(p.Load1, r.load1)
				fmt.Fprintf(os.Stderr, "  %-11s paced %4d B: %6.0f relayed packets/s, %5.2f µs server CPU/packet, loss %.3f%%, uclient %.2f µs/packet, others %.0f%% CPU, load %.2f\n",
					s.name, size, r.relayedPPS, r.cpuUs, r.lossPct, r.clientUs, r.otherPct, r.load1)
			}
		}
	}
	for i := range servers {
		for _, size := range sizes {
			b.Paced = append(b.Paced, *res[[2]int{i, size}])
		}
	}
}

// pacedResult is one paced run: relayed packets per second, server and uclient CPU per
// relayed packet (µs), uclient's loss (%), other processes' share of the CPUs (%) and the
// load average at the start.
type pacedResult struct {
	relayedPPS, cpuUs, clientUs, lossPct, otherPct, load1 float64
}

// pacedRun runs uclient once against s. The window in which CPU and packets are counted
// starts when every allocation is sending and ends before the first one stops.
func (b *bench) pacedRun(s *server, uclient string, p *Paced) (pacedResult, error) {
	n := int((pacedSpread+b.pacedWindow+800*time.Millisecond)/pacedInterval) + 1 // datagrams per allocation
	// -c: no RTCP allocations, one allocation per client.
	args := []string{"-c",
		"-W", s.secret, "-u", "paced",
		"-e", b.echo.addr.Addr().String(), "-r", strconv.Itoa(int(b.echo.addr.Port())),
		"-p", strconv.Itoa(s.ports["udp"]), "-L", pacedIP(b.pacedCount).String(),
		"-m", strconv.Itoa(p.Clients), "-n", strconv.Itoa(n), "-l", strconv.Itoa(p.Size),
		"-z", strconv.Itoa(p.IntervalMS), "127.0.0.1"}
	// uclient connects its allocations about 100 ms apart, waits 1-6 s, sends n each and
	// waits for the last answers: bound all of it.
	connect := time.Duration(p.Clients)*150*time.Millisecond + 8*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), connect+time.Duration(n)*pacedInterval+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, uclient, args...)
	var out bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: 1 << 20}
	cmd.Stderr = cmd.Stdout
	b.pacedCount++
	load := loadAvg1()
	before := b.echo.echoed.Load()
	proc, err := startProc("uclient", cmd)
	if err != nil {
		return pacedResult{}, err
	}
	defer func() { cancel(); <-proc.done }()
	deadline := time.Now().Add(connect)
	for b.echo.echoed.Load() == before {
		if proc.exited() || time.Now().After(deadline) {
			return pacedResult{}, fmt.Errorf("uclient relayed nothing (%s):\n%s", uclientError(out.String()), tail(out.String(), 2000))
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(pacedSpread)
	stopProfile := b.startProfile(s, p)
	e0, c0 := b.echo.echoed.Load(), sampleCPU(s.p.pid(), proc.pid())
	time.Sleep(b.pacedWindow)
	e1, c1 := b.echo.echoed.Load(), sampleCPU(s.p.pid(), proc.pid())
	stopProfile()
	select {
	case <-proc.done:
	case <-ctx.Done():
		return pacedResult{}, fmt.Errorf("uclient did not finish in time")
	}
	totals := uclientTotals.FindAllStringSubmatch(out.String(), -1)
	lost := uclientLost.FindStringSubmatch(out.String())
	if len(totals) == 0 || lost == nil {
		return pacedResult{}, fmt.Errorf("no totals in uclient's output:\n%s", tail(out.String(), 2000))
	}
	sent, _ := strconv.ParseFloat(totals[len(totals)-1][1], 64)
	nlost, _ := strconv.ParseFloat(lost[1], 64)
	relayed := 2 * float64(e1-e0)
	if relayed == 0 || sent == 0 {
		return pacedResult{}, fmt.Errorf("nothing relayed in the measurement window")
	}
	d := c0.to(c1)
	return pacedResult{relayedPPS: relayed / d.elapsed.Seconds(), cpuUs: float64(d.server.Microseconds()) / relayed,
		clientUs: float64(d.client.Microseconds()) / relayed, lossPct: 100 * nlost / sent, otherPct: d.otherPct, load1: load}, nil
}

// startProfile runs the -paced-profile command (through sh, with {pid}, {server} and {size}
// replaced) while a paced window runs, for example "perf trace -s -p {pid}" or "strace -c -f
// -p {pid}", and returns the function that stops it with SIGINT (so that such tools print
// their summaries) at the window's end. Its output goes to a file next to the JSON results.
// The tool's own overhead lands in that run's CPU figures: profile in runs of their own.
func (b *bench) startProfile(s *server, p *Paced) func() {
	if b.profileCmd == "" {
		return func() {}
	}
	r := strings.NewReplacer("{pid}", strconv.Itoa(s.p.pid()), "{server}", s.name, "{size}", strconv.Itoa(p.Size))
	name := filepath.Join(filepath.Dir(b.out), fmt.Sprintf("profile-%s-%d-run%d.txt", s.name, p.Size, len(p.CPUus)+1))
	f, err := os.Create(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "  profile:", err)
		return func() {}
	}
	cmd := exec.Command("sh", "-c", r.Replace(b.profileCmd))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		fmt.Fprintln(os.Stderr, "  profile:", err)
		return func() {}
	}
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) // its process group: sh and the tool
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		f.Close()
		fmt.Fprintf(os.Stderr, "  profile: %s\n", name)
	}
}

// limitedWriter keeps the first n bytes written to it and discards the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.n > 0 {
		k := min(len(b), l.n)
		l.n -= k
		_, _ = l.w.Write(b[:k])
	}
	return len(b), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// minMedMax of runs (zeros when there are none; the median of an even count is the mean of
// the middle two).
func minMedMax(runs []float64) [3]float64 {
	n := len(runs)
	if n == 0 {
		return [3]float64{}
	}
	s := slices.Clone(runs)
	slices.Sort(s)
	return [3]float64{s[0], (s[(n-1)/2] + s[n/2]) / 2, s[n-1]}
}

func (b *bench) printPaced(w io.Writer) {
	if len(b.Paced) == 0 {
		return
	}
	p0 := b.Paced[0]
	fmt.Fprintf(w, "\npaced load: coturn's turnutils_uclient, %d allocations each sending a datagram every %d ms (%.0f/s) to the echo peer and back;\n"+
		"server CPU per relayed packet over a %.0f s window in which all of them send, %d runs:\n",
		p0.Clients, p0.IntervalMS, p0.OfferedPPS, b.pacedWindow.Seconds(), b.pacedRuns)
	fmt.Fprintf(w, "%-11s %5s  %-14s %-20s %-9s %-11s %-10s %-9s\n",
		"server", "size", "relayed pkt/s", "µs/pkt min/med/max", "vs coturn", "loss% max", "uclient µs", "others %")
	fmt.Fprintln(w, strings.Repeat("-", 98))
	for _, p := range b.Paced {
		if p.Skipped != "" {
			fmt.Fprintf(w, "%-11s %5d  skipped: %s\n", p.Server, p.Size, firstLine(p.Skipped))
			continue
		}
		cpu, rate, loss := minMedMax(p.CPUus), minMedMax(p.RelayedPPS), minMedMax(p.LossPct)
		vs := ""
		for _, c := range b.Paced {
			if c.Server == "coturn" && c.Size == p.Size && c.Skipped == "" && p.Server != "coturn" {
				vs = fmt.Sprintf("%.2f×", cpu[1]/minMedMax(c.CPUus)[1])
			}
		}
		other := minMedMax(p.OtherPct)
		fmt.Fprintf(w, "%-11s %5d  %13.0f  %5.2f/%5.2f/%5.2f    %-9s %-11.3f %-10.2f %.0f-%.0f\n",
			p.Server, p.Size, rate[1], cpu[0], cpu[1], cpu[2], vs, loss[2], minMedMax(p.ClientCPU)[1], other[0], other[2])
	}
}

// uclientError is the first line of uclient's output that reports an error.
func uclientError(out string) string {
	for line := range strings.Lines(out) {
		if strings.Contains(line, "error") {
			return strings.TrimSpace(line)
		}
	}
	return "no error reported"
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
