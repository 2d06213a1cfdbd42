// Command bench measures Ferry's relay side by side with coturn and a raw UDP forwarder on
// this machine, over loopback: capacity (closed loop), loss and latency (open loop), server
// CPU per relayed packet, authenticated allocations per second and memory per allocation.
// It prints one table and writes the results as JSON. Run it with `make bench`.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

func main() {
	raw := flag.Bool("raw-forwarder", false, "run as the raw UDP forwarder (internal)")
	peer := flag.String("peer", "", "the raw forwarder's peer (internal)")
	rawGSO := flag.Bool("gso", false, "the raw forwarder sends with UDP GSO (internal)")
	out := flag.String("out", "bench/results/latest.json", "where to write the JSON results")
	dur := flag.Duration("duration", 1500*time.Millisecond, "length of each capacity run")
	repeats := flag.Int("repeats", 5, "repetitions of each capacity case")
	allocs := flag.Int("allocations", 10000, "allocations for the memory and allocation-rate measurement")
	quick := flag.Bool("quick", false, "a fast smoke run: short, one repeat, fewer allocations")
	only := flag.String("servers", "raw,raw-gso,ferry,ferry-nomon,coturn", "servers to measure")
	phases := flag.String("phases", strings.Join(allPhases, ","), "what to measure")
	pacedPPS := flag.Float64("paced-pps", 12500, "paced phase: datagrams per second uclient sends (the server relays each twice)")
	pacedRuns := flag.Int("paced-runs", 3, "paced phase: runs per server and size")
	pacedWindow := flag.Duration("paced-window", 4*time.Second, "paced phase: the steady window each run measures")
	consultStart := flag.Int("consult-start", 20, "consultations phase: the first number of consultations")
	consultMax := flag.Int("consult-max", 1000, "consultations phase: the most consultations to try")
	consultWindow := flag.Duration("consult-window", 4*time.Second, "consultations phase: the counted window of each step")
	profile := flag.String("paced-profile", "", "paced phase: a command run against each server during each window ({pid}, {server}, {size} replaced), e.g. \"perf trace -s -p {pid}\"")
	setsid := flag.Bool("setsid", true, "start every server and uclient in a session of its own (false: all in the benchmark's session)")
	onlyT := flag.String("transports", strings.Join(transports, ","), "client transports to measure")
	flag.Parse()
	transports = strings.Split(*onlyT, ",")
	ownSession = *setsid
	if *raw {
		if err := runRawForwarder(*peer, *rawGSO); err != nil {
			fmt.Fprintln(os.Stderr, "raw forwarder:", err)
			os.Exit(1)
		}
		return
	}
	if *quick { // short defaults; flags given explicitly still win
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			*dur = 500 * time.Millisecond
		}
		if !set["repeats"] {
			*repeats = 1
		}
		if !set["allocations"] {
			*allocs = 1000
		}
		if !set["paced-runs"] {
			*pacedRuns = 1
		}
		if !set["paced-window"] {
			*pacedWindow = 2 * time.Second
		}
		if !set["consult-window"] {
			*consultWindow = 2 * time.Second
		}
	}
	err := checkFlags(*dur, *repeats, *allocs, strings.Split(*only, ","), strings.Split(*phases, ","), transports)
	if err == nil && (*pacedPPS <= 0 || *pacedRuns < 1 || *pacedWindow < 500*time.Millisecond) {
		err = errors.New("-paced-pps must be positive, -paced-runs at least 1, -paced-window at least 500ms")
	}
	if err == nil && (*consultStart < 1 || *consultMax < *consultStart || *consultWindow < 500*time.Millisecond) {
		err = errors.New("-consult-start must be at least 1, -consult-max at least -consult-start, -consult-window at least 500ms")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	b := &bench{dur: *dur, repeats: *repeats, allocations: *allocs,
		servers: strings.Split(*only, ","), phases: strings.Split(*phases, ","),
		pacedPPS: *pacedPPS, pacedRuns: *pacedRuns, pacedWindow: *pacedWindow,
		consultStart: *consultStart, consultMax: *consultMax, consultWindow: *consultWindow,
		profileCmd: *profile, out: *out}
	if err := b.run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	b.print(os.Stdout)
	if err := b.save(*out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Printf("\nresults: %s\n", *out)
}

// checkFlags refuses settings that cannot measure anything.
func checkFlags(dur time.Duration, repeats, allocs int, servers, phases, ts []string) error {
	var problems []string
	if dur <= 0 {
		problems = append(problems, "-duration must be positive")
	}
	if repeats < 1 {
		problems = append(problems, "-repeats must be at least 1")
	}
	if allocs < 2 && slices.Contains(phases, "memory") {
		problems = append(problems, "-allocations must be at least 2 for the memory phase")
	}
	for _, l := range []struct {
		flag  string
		got   []string
		known []string
	}{{"-servers", servers, []string{"raw", "raw-gso", "ferry", "ferry-nomon", "coturn"}},
		{"-phases", phases, allPhases},
		{"-transports", ts, []string{"udp", "tcp", "tls"}}} {
		for _, v := range l.got {
			if !slices.Contains(l.known, v) {
				problems = append(problems, fmt.Sprintf("%s: unknown %q (known: %s)", l.flag, v, strings.Join(l.known, ", ")))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

const (
	allocWorkers = 64 // concurrent Allocate handshakes in the allocation-rate measurement
	sessions     = 4  // concurrent allocations per load run
	window       = 16 // packets in flight per session (closed loop)
)

var (
	allPhases  = []string{"capacity", "open-loop", "memory", "paced", "consultations"}
	sizes      = []int{100, 1200}
	transports = []string{"udp", "tcp", "tls"}
)

// Case is one measured configuration.
type Case struct {
	Server    string `json:"server"`
	Transport string `json:"transport"`
	Size      int    `json:"size"`
	Mode      string `json:"mode"` // "capacity" or "open-loop"
	// RoundTrips per second through the relay (each is two relayed packets), min, median
	// and max over the repetitions.
	RoundTrips [3]float64 `json:"round_trips_per_s"`
	// RelayedPPS is 2 × median round trips: packets the server relays per second.
	RelayedPPS float64 `json:"relayed_pps"`
	Mbps       float64 `json:"mbit_per_s"` // payload, both directions, at the median
	LossPct    float64 `json:"loss_pct"`   // worst over the repetitions
	P50        float64 `json:"rtt_ms_p50"`
	P99        float64 `json:"rtt_ms_p99"`
	CPUus      float64 `json:"server_cpu_us_per_packet"`      // median
	LoadCPUus  float64 `json:"loadgen_cpu_us_per_round_trip"` // median; load generator and echo peer
	OfferedRTs float64 `json:"offered_round_trips_per_s,omitempty"`
	Skipped    string  `json:"skipped,omitempty"`
}

// Memory is the allocation measurement of one server.
type Memory struct {
	Server        string    `json:"server"`
	AllocsPerSec  float64   `json:"allocations_per_s"` // median of the runs
	AllocRuns     []float64 `json:"allocations_per_s_runs"`
	CPUusPerAlloc float64   `json:"server_cpu_us_per_allocation"`
	RSSKiB        [3]int64  `json:"rss_kib_at_0_n1_n"`
	N1            int       `json:"n1"` // allocations at the middle RSS reading (1,000 unless -allocations is small)
	N             int       `json:"n"`
	KiBPerAlloc   float64   `json:"rss_kib_per_allocation"`
	Skipped       string    `json:"skipped,omitempty"`
}

type bench struct {
	dur                      time.Duration
	repeats                  int
	allocations              int
	started                  time.Time
	Cases                    []Case    `json:"cases"`
	Memory                   []Memory  `json:"memory"`
	Paced                    []Paced   `json:"paced"`
	Consults                 []Consult `json:"consultations"`
	Machine                  string    `json:"machine"`
	pacedPPS                 float64
	pacedRuns                int
	pacedWindow              time.Duration
	pacedCount               int // uclient runs so far
	consultStart, consultMax int
	consultWindow            time.Duration
	profileCmd, out          string
	dir                      string
	servers                  []string
	phases                   []string
	echo                     *echoPeer
	halfFerry                map[string]float64 // transport -> half of Ferry's 100 B capacity
}

func (b *bench) run() error {
	b.started = time.Now()
	b.halfFerry = map[string]float64{}
	b.Machine = fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	dir, err := os.MkdirTemp("", "ferry-bench-")
	if err != nil {
		return err
	}
	b.dir = dir
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "ferry")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/ferry").CombinedOutput(); err != nil {
		return fmt.Errorf("build ferry: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cert, key, err := writeCert(dir)
	if err != nil {
		return err
	}
	b.echo, err = newEchoPeer(2)
	if err != nil {
		return err
	}
	defer b.echo.close()

	on := func(name string) bool { return slices.Contains(b.servers, name) }
	// All servers run at once; only one carries load at a time. Capacity runs alternate
	// between them, so that the machine's drift during the run affects all alike.
	var all []*server
	defer func() {
		for _, s := range all {
			s.p.stop()
		}
	}()
	for _, name := range []string{"raw", "raw-gso"} { // the limit, UDP only
		if on(name) {
			rs, err := startRaw(self, b.echo.addr.String(), name == "raw-gso")
			if err != nil {
				return err
			}
			all = append(all, rs)
		}
	}
	var ferry, coturn *server
	if on("ferry") { // as deployed: metrics and the allocation log on
		if ferry, err = startFerry(bin, dir, cert, key, true); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "  ferry pid %d, admin (pprof) port %d\n", ferry.p.pid(), ferry.admin)
		all = append(all, ferry)
	}
	if on("ferry-nomon") { // per-packet metrics and the allocation log off: what they cost
		nm, err := startFerry(bin, dir, cert, key, false)
		if err != nil {
			return err
		}
		all = append(all, nm)
	}
	if on("coturn") {
		if path, err := exec.LookPath("turnserver"); err == nil {
			if coturn, err = startCoturn(path, dir, cert, key); err != nil {
				return err
			}
			all = append(all, coturn)
		} else {
			b.Cases = append(b.Cases, Case{Server: "coturn", Skipped: "turnserver not installed (apt-get install coturn)"})
			b.Memory = append(b.Memory, Memory{Server: "coturn", Skipped: "turnserver not installed"})
		}
	}
	b.capacity(all)
	for _, s := range []*server{ferry, coturn} {
		if s != nil {
			b.openLoop(s)
		}
	}
	var turnServers []*server // the paced and consultation phases: Ferry as deployed, and coturn
	for _, s := range []*server{ferry, coturn} {
		if s != nil {
			turnServers = append(turnServers, s)
		}
	}
	for _, s := range turnServers {
		b.memory(s)
	}
	// After the memory phase: uclient leaves an allocation per client behind until it
	// expires (its probe), which would count as memory.
	b.paced(turnServers)
	b.consultations(turnServers)
	return nil
}

// capacity measures closed-loop capacity on every transport each server speaks (the raw
// forwarder and ferry-nomon: UDP only), repeating each case with the servers' runs
// interleaved (A B C A B C ...).
func (b *bench) capacity(all []*server) {
	if !slices.Contains(b.phases, "capacity") {
		return
	}
	for _, t := range transports {
		var active []*server
		var sess [][]*session
		for _, s := range all {
			if t != "udp" && (!s.turn || s.name == "ferry-nomon") {
				continue
			}
			ss, err := openSessions(*s, t, sessions, b.echo.addr)
			if err != nil {
				b.Cases = append(b.Cases, Case{Server: s.name, Transport: t, Mode: "capacity", Skipped: err.Error()})
				continue
			}
			active, sess = append(active, s), append(sess, ss)
		}
		for _, size := range sizes {
			// Ferry with and without monitoring get twice the runs: what they differ by is
			// smaller than the run-to-run noise.
			pair := slices.ContainsFunc(active, func(s *server) bool { return s.name == "ferry-nomon" })
			runs := make([][]loadResult, len(active))
			for r := range 2 * b.repeats {
				for i, s := range active {
					if r < b.repeats || pair && (s.name == "ferry" || s.name == "ferry-nomon") {
						runs[i] = append(runs[i], closedLoop(sess[i], size, window, b.dur, s.p.pid()))
					}
				}
			}
			for i, s := range active {
				c := summarize(s.name, t, size, "capacity", runs[i])
				b.Cases = append(b.Cases, c)
				if s.name == "ferry" && size == 100 {
					b.halfFerry[t] = c.RoundTrips[1] / 2
				}
				fmt.Fprintf(os.Stderr, "  %-11s %-3s %4d B: %8.0f round trips/s, loss %.2f%%, %.2f µs server CPU/packet, %.2f µs load generator CPU/round trip\n",
					s.name, t, size, c.RoundTrips[1], c.LossPct, c.CPUus, c.LoadCPUus)
			}
		}
		for _, ss := range sess {
			closeSessions(ss)
		}
	}
}

// openLoop offers half of Ferry's 100 B capacity (per transport) to s: loss and latency at
// the same offered rate for every server.
func (b *bench) openLoop(s *server) {
	if !slices.Contains(b.phases, "open-loop") {
		return
	}
	for _, t := range transports {
		rate := b.halfFerry[t]
		if rate == 0 {
			continue
		}
		ss, err := openSessions(*s, t, sessions, b.echo.addr)
		if err != nil {
			b.Cases = append(b.Cases, Case{Server: s.name, Transport: t, Mode: "open-loop", Skipped: err.Error()})
			continue
		}
		r := openLoop(ss, 100, rate, max(b.dur, time.Second), s.p.pid())
		c := summarize(s.name, t, 100, "open-loop", []loadResult{r})
		c.OfferedRTs = rate
		b.Cases = append(b.Cases, c)
		fmt.Fprintf(os.Stderr, "  %-11s %-3s open loop %.0f/s: loss %.3f%%, p50 %.3f ms, p99 %.3f ms\n",
			s.name, t, rate, c.LossPct, c.P50, c.P99)
		closeSessions(ss)
	}
}

func summarize(name, t string, size int, mode string, runs []loadResult) Case {
	c := Case{Server: name, Transport: t, Size: size, Mode: mode}
	var rates, cpus, loads []float64
	var rtts []time.Duration
	for _, r := range runs {
		rates = append(rates, r.rate())
		if r.Received > 0 {
			cpus = append(cpus, float64(r.ServerCPU.Microseconds())/float64(2*r.Received))
			loads = append(loads, float64(r.LoadCPU.Microseconds())/float64(r.Received))
		}
		c.LossPct = max(c.LossPct, r.lossPct())
		rtts = append(rtts, r.RTTs...)
	}
	slices.Sort(rates)
	slices.Sort(cpus)
	c.RoundTrips = [3]float64{rates[0], rates[len(rates)/2], rates[len(rates)-1]}
	c.RelayedPPS = 2 * c.RoundTrips[1]
	c.Mbps = c.RelayedPPS * float64(size) * 8 / 1e6
	if len(cpus) > 0 {
		slices.Sort(loads)
		c.CPUus = cpus[len(cpus)/2]
		c.LoadCPUus = loads[len(loads)/2]
	}
	all := loadResult{RTTs: rtts}
	c.P50 = float64(all.percentile(0.50).Microseconds()) / 1000
	c.P99 = float64(all.percentile(0.99).Microseconds()) / 1000
	return c
}

// memory measures authenticated allocations per second and RSS at 0, 1,000 and n allocations.
func (b *bench) memory(s *server) {
	if !slices.Contains(b.phases, "memory") {
		return
	}
	m := Memory{Server: s.name, N: b.allocations}
	s.gc()
	time.Sleep(200 * time.Millisecond)
	m.RSSKiB[0], _ = rssKiB(s.p.pid())
	m.N1 = min(1000, b.allocations/2)
	first, _, err := allocateMany(*s, 0, m.N1, 16)
	if err != nil {
		m.Skipped = err.Error()
		b.Memory = append(b.Memory, m)
		return
	}
	s.gc()
	m.RSSKiB[1], _ = rssKiB(s.p.pid())
	cpu0, _ := cpuTime(s.p.pid())
	self0, _ := cpuTime(os.Getpid())
	rest, elapsed, err := allocateMany(*s, 0, b.allocations-len(first), allocWorkers)
	cpu1, _ := cpuTime(s.p.pid())
	self1, _ := cpuTime(os.Getpid())
	if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "  %-11s load generator: %.0f µs CPU per allocation\n", s.name,
			float64((self1-self0).Microseconds())/float64(len(rest)))
	}
	if err != nil {
		releaseAll(first, 16)
		m.Skipped = err.Error()
		b.Memory = append(b.Memory, m)
		return
	}
	m.AllocsPerSec = float64(len(rest)) / elapsed.Seconds()
	if len(rest) > 0 {
		m.CPUusPerAlloc = float64((cpu1 - cpu0).Microseconds()) / float64(len(rest))
	}
	s.gc()
	time.Sleep(200 * time.Millisecond)
	m.RSSKiB[2], _ = rssKiB(s.p.pid())
	m.KiBPerAlloc = float64(m.RSSKiB[2]-m.RSSKiB[0]) / float64(b.allocations)
	fmt.Fprintf(os.Stderr, "  %-11s %.0f allocations/s (%.0f µs server CPU each), RSS %d/%d/%d KiB, %.1f KiB per allocation\n",
		s.name, m.AllocsPerSec, m.CPUusPerAlloc, m.RSSKiB[0], m.RSSKiB[1], m.RSSKiB[2], m.KiBPerAlloc)
	if hold, err := time.ParseDuration(os.Getenv("BENCH_HOLD")); err == nil {
		fmt.Fprintf(os.Stderr, "  holding %d allocations on %s for %s (admin port %d)\n", b.allocations, s.name, hold, s.admin)
		time.Sleep(hold)
	}
	releaseAll(append(first, rest...), 16)
	// More allocation-rate runs (the rate varies more from run to run than throughput).
	m.AllocRuns = append(m.AllocRuns, m.AllocsPerSec)
	for run := 1; run <= 2; run++ {
		more, elapsed, err := allocateMany(*s, run, b.allocations, allocWorkers)
		if err != nil {
			fmt.Fprintf(os.Stderr, "  %-11s allocation-rate run: %v\n", s.name, err)
			break
		}
		m.AllocRuns = append(m.AllocRuns, float64(len(more))/elapsed.Seconds())
		releaseAll(more, 16)
	}
	runs := slices.Clone(m.AllocRuns)
	slices.Sort(runs)
	m.AllocsPerSec = runs[len(runs)/2]
	b.Memory = append(b.Memory, m)
}

func (b *bench) find(server, t string, size int, mode string) *Case {
	for i := range b.Cases {
		c := &b.Cases[i]
		if c.Server == server && c.Transport == t && c.Size == size && c.Mode == mode && c.Skipped == "" {
			return c
		}
	}
	return nil
}

func (b *bench) print(w *os.File) {
	fmt.Fprintf(w, "\nFerry relay benchmark, %s, %s (%.0f s)\n", b.Machine, b.started.Format(time.RFC3339), time.Since(b.started).Seconds())
	b.printConsults(w)
	fmt.Fprintf(w, "loopback; %d allocations × %d packets in flight; round trips through the relay to an echo peer (2 relayed packets each)\n\n", sessions, window)
	fmt.Fprintf(w, "%-11s %-4s %5s  %-26s %7s %6s %6s %9s  %-9s %-8s %-8s\n",
		"server", "tx", "size", "round trips/s min/med/max", "Mbit/s", "loss%", "µs/pkt", "p50/p99ms", "vs coturn", "CPU/raw", "CPU/raw-gso")
	fmt.Fprintln(w, strings.Repeat("-", 118))
	rank := map[string]int{"raw": 0, "raw-gso": 1, "ferry": 2, "ferry-nomon": 3, "coturn": 4}
	cases := slices.Clone(b.Cases)
	slices.SortStableFunc(cases, func(x, y Case) int { return rank[x.Server] - rank[y.Server] })
	for _, c := range cases {
		if c.Mode != "capacity" {
			continue
		}
		if c.Skipped != "" {
			fmt.Fprintf(w, "%-11s %-4s skipped: %s\n", c.Server, c.Transport, c.Skipped)
			continue
		}
		vs := ""
		if co := b.find("coturn", c.Transport, c.Size, "capacity"); co != nil && c.Server != "coturn" {
			vs = fmt.Sprintf("%.2f×", c.RoundTrips[1]/co.RoundTrips[1])
		}
		var vsRaw [2]string
		for i, name := range []string{"raw", "raw-gso"} {
			if raw := b.find(name, "udp", c.Size, "capacity"); raw != nil && c.Transport == "udp" && raw.CPUus > 0 {
				vsRaw[i] = fmt.Sprintf("%.2f×", c.CPUus/raw.CPUus)
			}
		}
		fmt.Fprintf(w, "%-11s %-4s %5d  %8.0f/%8.0f/%8.0f %7.0f %6.3f %6.2f %4.2f/%4.2f  %-9s %-8s %-8s\n",
			c.Server, c.Transport, c.Size, c.RoundTrips[0], c.RoundTrips[1], c.RoundTrips[2], c.Mbps,
			c.LossPct, c.CPUus, c.P50, c.P99, vs, vsRaw[0], vsRaw[1])
	}
	fmt.Fprintf(w, "\nopen loop at half of Ferry's 100 B capacity (same offered rate for both):\n")
	for _, c := range b.Cases {
		if c.Mode == "open-loop" && c.Skipped == "" {
			fmt.Fprintf(w, "%-11s %-4s %8.0f round trips/s offered: loss %.3f%%, p50 %.3f ms, p99 %.3f ms\n",
				c.Server, c.Transport, c.OfferedRTs, c.LossPct, c.P50, c.P99)
		}
	}
	b.printPaced(w)
	fmt.Fprintf(w, "\nallocations (UDP, authenticated, %d concurrent handshakes) and memory:\n", allocWorkers)
	for _, m := range b.Memory {
		if m.Skipped != "" {
			fmt.Fprintf(w, "%-11s skipped: %s\n", m.Server, m.Skipped)
			continue
		}
		runs := slices.Clone(m.AllocRuns)
		slices.Sort(runs)
		fmt.Fprintf(w, "%-11s %5.0f/%5.0f/%5.0f allocations/s (min/med/max), %3.0f µs server CPU each; RSS %d KiB idle, %d KiB at %d, %d KiB at %d: %.1f KiB per allocation\n",
			m.Server, runs[0], m.AllocsPerSec, runs[len(runs)-1], m.CPUusPerAlloc, m.RSSKiB[0], m.RSSKiB[1], m.N1, m.RSSKiB[2], m.N, m.KiBPerAlloc)
	}
	fmt.Fprintln(w)
	for _, size := range sizes {
		if on, off := b.find("ferry", "udp", size, "capacity"), b.find("ferry-nomon", "udp", size, "capacity"); on != nil && off != nil {
			fmt.Fprintf(w, "metrics and allocation log on vs off (UDP, %d B, interleaved runs): %.1f%% of the throughput, %.2f vs %.2f µs CPU/packet\n",
				size, 100*on.RoundTrips[1]/off.RoundTrips[1], on.CPUus, off.CPUus)
		}
	}
}

func (b *bench) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
