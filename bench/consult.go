package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ferryrelay/ferry/internal/mmsg"
	"golang.org/x/sys/unix"
)

// The consultations phase: how many 1:1 video consultations with both parties relayed one
// server carries on this machine's two CPUs (shared with the load generator) before a call
// would suffer. Each party has an allocation on the server, and its channel is bound to the
// other party's relayed transport address (relay to relay, as when both browsers are behind
// firewalls that allow only the relay), so every datagram crosses the server twice. Per party
// and direction: Opus, 50 datagrams/s of 120 B, and video, 30 frames/s of 1.5 Mbit/s in
// total, each frame a burst of equal datagrams of at most 1,200 B. The number of
// consultations grows until loss exceeds 0.1 % or the p99 one-way delay 20 ms.

const (
	audioInterval   = 20 * time.Millisecond
	audioPayload    = 120
	videoInterval   = time.Second / 30
	videoFrameBytes = 1_500_000 / 8 / 30 // 6,250 B a frame at 1.5 Mbit/s
	maxDatagram     = 1200
	consultMaxLoss  = 0.1  // % of datagrams
	consultMaxP99   = 20.0 // ms, one way
	// consultWarmup runs before each counted window: the new consultations' first frames and
	// the server's buffers settle.
	consultWarmup = time.Second
	// consultDrain is how long datagrams sent in the window may take to arrive; later ones
	// count as lost.
	consultDrain = 300 * time.Millisecond
	// consultBudget bounds one server's search (and keeps it inside the 300 s lifetime of
	// the permissions the parties installed once).
	consultBudget = 240 * time.Second
	// delay histogram: 50 µs buckets up to 1 s.
	histBucket = 50 * time.Microsecond
	histLen    = int(time.Second / histBucket)
)

// ConsultStep is one measured number of concurrent consultations.
type ConsultStep struct {
	Consultations int     `json:"consultations"`
	Sent          int64   `json:"datagrams_sent"`
	LossPct       float64 `json:"loss_pct"`
	P50           float64 `json:"delay_ms_p50"`
	P99           float64 `json:"delay_ms_p99"`
	Max           float64 `json:"delay_ms_max"`
	ServerCPUPct  float64 `json:"server_cpu_pct"` // of one CPU
	LoadCPUPct    float64 `json:"load_generator_cpu_pct"`
	SenderLate    float64 `json:"sender_late_ms_max"` // how far the generator fell behind its schedule
	OtherPct      float64 `json:"other_cpu_pct"`      // of the machine
	ServerCPUus   float64 `json:"server_cpu_us_per_relayed_packet"`
	Pass          bool    `json:"pass"`
	Noisy         bool    `json:"noisy,omitempty"` // failed while other processes took much of the machine
}

// Consult is the consultations search of one server.
type Consult struct {
	Server string        `json:"server"`
	Max    int           `json:"max_consultations"` // the highest number that passed
	Capped bool          `json:"capped,omitempty"`  // passed at -consult-max: the limit is higher
	Steps  []ConsultStep `json:"steps"`
	Load1  float64       `json:"load_avg_1m_at_start"`
	Skip   string        `json:"skipped,omitempty"`
}

// party is one side of a consultation: its own UDP socket and allocation, with a channel
// bound to the other party's relayed transport address.
type party struct {
	c            *turnClient // for the final deallocation
	fd           int         // the client socket, detached from Go's poller
	ch           uint16
	audio, video time.Duration // next audio datagram and next video frame, since the generator's base
}

// consultGen is the load generator: one goroutine sends what is due every millisecond, one
// receives through its own epoll set. Datagrams carry their send time, so the receiver
// measures one-way delay; the window they were sent in decides whether they count.
type consultGen struct {
	base    time.Time
	parties []*party // the controller's; the sender reads the published copy
	pub     atomic.Pointer[[]*party]
	epfd    int
	active  atomic.Int64  // parties sending (2 per consultation)
	gen     atomic.Int64  // bumped when a step starts: the sender gives every party new phases
	tag     atomic.Uint32 // what the sender stamps (0: not counted)
	counted atomic.Uint32 // tag of the window being counted (0: none)
	lastTag uint32
	sent    atomic.Int64
	recv    atomic.Int64
	rx      atomic.Int64 // every datagram received, counted or not
	hist    []atomic.Int64
	maxNs   atomic.Int64
	late    atomic.Int64 // the sender's worst lateness in the window (ns): is the generator keeping up?
	stop    chan struct{}
	wg      sync.WaitGroup
	gso     bool
	closed  bool
}

func newConsultGen() (*consultGen, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	g := &consultGen{base: time.Now(), epfd: epfd, hist: make([]atomic.Int64, histLen+1),
		stop: make(chan struct{}), gso: mmsg.GSOAvailable()}
	g.wg.Go(g.receive)
	g.wg.Go(g.send)
	return g, nil
}

// grow adds consultations until there are n, each two allocations bound to each other.
func (g *consultGen) grow(s *server, n int) error {
	for len(g.parties) < 2*n {
		i := len(g.parties) / 2
		a, ra, err := g.allocate(s, fmt.Sprintf("consult-%d-a", i))
		if err != nil {
			return err
		}
		b, rb, err := g.allocate(s, fmt.Sprintf("consult-%d-b", i))
		if err != nil {
			a.c.Close()
			return err
		}
		const ch = 0x4000
		errA, errB := a.c.channelBind(ch, rb), b.c.channelBind(ch, ra)
		if err := errors.Join(errA, errB); err != nil {
			a.c.Close()
			b.c.Close()
			return fmt.Errorf("relay to relay ChannelBind: %w", err)
		}
		for _, p := range []*party{a, b} {
			p.ch = ch
			if err := g.detach(p); err != nil {
				return err
			}
			g.parties = append(g.parties, p)
		}
	}
	ps := slices.Clone(g.parties)
	g.pub.Store(&ps)
	return nil
}

func (g *consultGen) allocate(s *server, user string) (*party, netip.AddrPort, error) {
	c, err := dialTURNAt(consultIP, "udp", s.addr("udp"))
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	relayed, err := c.allocate(s.secret, user)
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, err
	}
	return &party{c: c}, relayed, nil
}

// detach moves the party's socket from Go's poller to the generator's epoll set: a
// duplicate descriptor, and the Go socket closed (which also takes it out of Go's poller,
// whose wake-ups would otherwise cost the generator a thread switch per datagram).
func (g *consultGen) detach(p *party) error {
	rc, err := p.c.conn.(*net.UDPConn).SyscallConn()
	if err != nil {
		return err
	}
	var dupErr error
	if err := rc.Control(func(fd uintptr) { p.fd, dupErr = unix.Dup(int(fd)) }); err != nil {
		return err
	}
	if dupErr != nil {
		return dupErr
	}
	p.c.conn.Close()
	if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.fd)}
	return unix.EpollCtl(g.epfd, unix.EPOLL_CTL_ADD, p.fd, &ev)
}

// send writes, every millisecond, each active party's due audio datagram and video frame
// (one UDP GSO send per frame where the kernel has it).
func (g *consultGen) send() {
	audio := make([]byte, 4+audioPayload)
	segs := (videoFrameBytes + maxDatagram - 1) / maxDatagram
	seg := 4 + (videoFrameBytes+segs-1)/segs
	frame := make([]byte, segs*seg)
	var oob []byte
	if g.gso {
		oob = make([]byte, unix.CmsgSpace(2))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(oob[unix.SizeofCmsghdr:], uint16(seg))
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var gen int64
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		n := int(g.active.Load())
		if n == 0 {
			continue
		}
		parties := (*g.pub.Load())[:n]
		if v := g.gen.Load(); v != gen { // a new step: random phases, calls do not start in step
			gen = v
			now := time.Since(g.base)
			for _, p := range parties {
				p.audio = now + rand.N(audioInterval)
				p.video = now + rand.N(videoInterval)
			}
		}
		tag := g.tag.Load()
		for _, p := range parties {
			now := time.Since(g.base)
			if late := int64(now - min(p.audio, p.video)); tag != 0 && late > g.late.Load() {
				g.late.Store(late)
			}
			if now >= p.audio {
				p.audio += audioInterval
				g.stamp(audio, p.ch, tag)
				g.count(tag, 1)
				_, _ = unix.Write(p.fd, audio)
			}
			if now >= p.video {
				p.video += videoInterval
				for i := range segs {
					g.stamp(frame[i*seg:(i+1)*seg], p.ch, tag)
				}
				g.count(tag, segs)
				if g.gso {
					if _, err := unix.SendmsgN(p.fd, frame, oob, nil, unix.MSG_DONTWAIT); err == nil {
						continue
					}
				}
				for i := range segs {
					_, _ = unix.Write(p.fd, frame[i*seg:(i+1)*seg])
				}
			}
		}
	}
}

// stamp writes ChannelData framing, the send time (Unix ns) and the window's tag into d.
func (g *consultGen) stamp(d []byte, ch uint16, tag uint32) {
	binary.BigEndian.PutUint16(d, ch)
	binary.BigEndian.PutUint16(d[2:], uint16(len(d)-4))
	binary.BigEndian.PutUint64(d[4:], uint64(time.Now().UnixNano())) // the clock of SO_TIMESTAMPNS
	binary.BigEndian.PutUint32(d[12:], tag)
}

func (g *consultGen) count(tag uint32, n int) {
	if tag != 0 && tag == g.counted.Load() {
		g.sent.Add(int64(n))
	}
}

// receive reads every party's socket as it becomes readable (recvmmsg) and records the
// one-way delay of each datagram of the counted window: from the send time in the payload
// to the kernel's receive timestamp (SO_TIMESTAMPNS), taken when the server's datagram
// reached the client's socket. How soon this goroutine then runs is the load generator's
// business and stays out of the figure.
func (g *consultGen) receive() {
	events := make([]unix.EpollEvent, 256)
	rb := newRxBatch(32)
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		n, err := unix.EpollWait(g.epfd, events, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			for {
				k := rb.read(int(ev.Fd))
				g.rx.Add(int64(k))
				counted := g.counted.Load()
				for i := range k {
					d, at := rb.datagram(i)
					if len(d) < 16 || counted == 0 || binary.BigEndian.Uint32(d[12:]) != counted || at == 0 {
						continue
					}
					delay := time.Duration(at - int64(binary.BigEndian.Uint64(d[4:])))
					g.recv.Add(1)
					g.hist[min(max(int(delay/histBucket), 0), histLen)].Add(1)
					if int64(delay) > g.maxNs.Load() {
						g.maxNs.Store(int64(delay))
					}
				}
				if k < len(rb.bufs) {
					break // drained
				}
			}
		}
	}
}

// rxBatch is the state of recvmmsg with a receive timestamp per datagram.
type rxBatch struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
	ctrl [][]byte
}

func newRxBatch(n int) *rxBatch {
	b := &rxBatch{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n), ctrl: make([][]byte, n)}
	for i := range n {
		b.bufs[i] = make([]byte, 2048)
		b.ctrl[i] = make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	}
	return b
}

// read reads what is queued on fd without blocking, and returns how many datagrams.
func (b *rxBatch) read(fd int) int {
	for i := range b.hdrs {
		b.iovs[i] = unix.Iovec{Base: &b.bufs[i][0]}
		b.iovs[i].SetLen(len(b.bufs[i]))
		b.hdrs[i] = unix.Mmsghdr{}
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Control = &b.ctrl[i][0]
		b.hdrs[i].Hdr.SetControllen(len(b.ctrl[i]))
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}

// datagram returns the i-th datagram read and its receive time (Unix ns; 0 if none). The
// control data holds one message, the timestamp (parsed in place: no garbage per datagram).
func (b *rxBatch) datagram(i int) ([]byte, int64) {
	d := b.bufs[i][:b.hdrs[i].Len]
	c := b.ctrl[i][:b.hdrs[i].Hdr.Controllen]
	tsLen := int(unsafe.Sizeof(unix.Timespec{}))
	if len(c) < unix.CmsgLen(tsLen) {
		return d, 0
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	if h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_TIMESTAMPNS {
		return d, 0
	}
	return d, (*unix.Timespec)(unsafe.Pointer(&c[unix.CmsgLen(0)])).Nano()
}

// step runs n consultations for a warm-up and a counted window of dur and measures loss,
// delay and CPU.
func (g *consultGen) step(s *server, n int, dur time.Duration) ConsultStep {
	st := ConsultStep{Consultations: n}
	g.gen.Add(1)
	g.active.Store(int64(2 * n))
	time.Sleep(consultWarmup)
	g.sent.Store(0)
	g.recv.Store(0)
	g.maxNs.Store(0)
	g.late.Store(0)
	for i := range g.hist {
		g.hist[i].Store(0)
	}
	// counted before tag: whatever the sender stamps with the new tag is counted as sent.
	g.lastTag++
	tag := g.lastTag
	g.counted.Store(tag)
	g.tag.Store(tag)
	c0 := sampleCPU(s.p.pid(), 0)
	time.Sleep(dur)
	c1 := sampleCPU(s.p.pid(), 0)
	g.tag.Store(0) // what is sent from now on is not counted
	time.Sleep(consultDrain)
	g.counted.Store(0)
	g.active.Store(0)
	st.Sent, st.P50, st.P99, st.Max = g.sent.Load(), g.percentile(0.50), g.percentile(0.99), float64(g.maxNs.Load())/1e6
	st.SenderLate = float64(g.late.Load()) / 1e6
	if st.Sent > 0 {
		st.LossPct = 100 * float64(st.Sent-g.recv.Load()) / float64(st.Sent)
		st.ServerCPUus = float64(c0.to(c1).server.Microseconds()) / float64(2*st.Sent)
	}
	d := c0.to(c1)
	st.ServerCPUPct = 100 * d.server.Seconds() / d.elapsed.Seconds()
	st.LoadCPUPct = 100 * d.self.Seconds() / d.elapsed.Seconds()
	st.OtherPct = d.otherPct
	st.Pass = st.Sent > 0 && st.LossPct <= consultMaxLoss && st.P99 <= consultMaxP99
	g.quiesce()
	return st
}

// quiesce waits (at most 15 s) until nothing has arrived for 300 ms: an overloaded server
// may hold seconds of datagrams in its socket buffers, which would otherwise spill into
// the next step.
func (g *consultGen) quiesce() {
	last, quiet := g.rx.Load(), time.Now()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if n := g.rx.Load(); n != last {
			last, quiet = n, time.Now()
		} else if time.Since(quiet) >= 300*time.Millisecond {
			return
		}
	}
}

// percentile of the counted delays, in ms (bucket upper bounds).
func (g *consultGen) percentile(p float64) float64 {
	var total int64
	for i := range g.hist {
		total += g.hist[i].Load()
	}
	if total == 0 {
		return 0
	}
	want, seen := int64(p*float64(total)), int64(0)
	for i := range g.hist {
		seen += g.hist[i].Load()
		if seen > want {
			return float64(time.Duration(i+1)*histBucket) / 1e6
		}
	}
	return float64(time.Second) / 1e6
}

// close stops both goroutines and deletes every allocation.
func (g *consultGen) close() {
	if g.closed {
		return
	}
	g.closed = true
	close(g.stop)
	g.wg.Wait()
	var clients []*turnClient
	for _, p := range g.parties {
		_ = unix.EpollCtl(g.epfd, unix.EPOLL_CTL_DEL, p.fd, nil)
		f := os.NewFile(uintptr(p.fd), "party")
		conn, err := net.FileConn(f) // a Go socket again, for the Refresh that deallocates
		f.Close()
		if err != nil {
			continue
		}
		p.c.conn = conn
		clients = append(clients, p.c)
	}
	releaseAll(clients, 16)
	_ = unix.Close(g.epfd)
}

// consultations searches, on each server, for the highest number of consultations that
// passes: up by half again from -consult-start until a step fails, then bisecting. A step
// that fails is run once more before it counts (one noisy second on a shared machine should
// not end the search).
func (b *bench) consultations(servers []*server) {
	if !slices.Contains(b.phases, "consultations") {
		return
	}
	for _, s := range servers {
		c := Consult{Server: s.name, Load1: loadAvg1()}
		g, err := newConsultGen()
		if err != nil {
			c.Skip = err.Error()
			b.Consults = append(b.Consults, c)
			continue
		}
		start := time.Now()
		lo, hi := 0, 0 // highest pass, lowest fail
		for n := b.consultStart; n > 0 && time.Since(start) < consultBudget; {
			if err := g.grow(s, n); err != nil {
				c.Skip = fmt.Sprintf("%d consultations: %v", n, err)
				break
			}
			st := b.confirmedStep(g, s, n)
			c.Steps = append(c.Steps, st)
			if st.Pass {
				lo = n
			} else {
				hi = n
			}
			switch {
			case hi == 0 && n >= b.consultMax:
				c.Capped = true
				n = 0
			case hi == 0:
				n = min(b.consultMax, n+max(1, n/2))
			case hi-lo <= max(1, lo/20): // within 5 %
				n = 0
			default:
				n = (lo + hi) / 2
			}
		}
		c.Max = lo
		g.close()
		b.Consults = append(b.Consults, c)
	}
}

// confirmedStep runs a step; a failure counts only when a second run fails too, and when
// other processes took less than consultNoisy of the machine meanwhile (else it waits and
// runs again, a bounded number of times).
func (b *bench) confirmedStep(g *consultGen, s *server, n int) ConsultStep {
	const consultNoisy, retries = 15.0, 4
	fails := 0
	for try := 0; ; try++ {
		st := g.step(s, n, b.consultWindow)
		st.Noisy = st.OtherPct > consultNoisy
		b.logStep(s, st)
		if st.Pass || try == retries {
			return st
		}
		if st.Noisy {
			time.Sleep(5 * time.Second)
			continue
		}
		if fails++; fails == 2 {
			return st
		}
	}
}

func (b *bench) logStep(s *server, st ConsultStep) {
	verdict := "pass"
	if !st.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(os.Stderr, "  %-11s %4d consultations: %s, loss %.3f%%, one-way p50 %.2f ms, p99 %.2f ms, max %.1f ms; server %.0f%% CPU (%.2f µs/packet), load generator %.0f%% (late ≤ %.1f ms), others %.0f%%\n",
		s.name, st.Consultations, verdict, st.LossPct, st.P50, st.P99, st.Max, st.ServerCPUPct, st.ServerCPUus, st.LoadCPUPct, st.SenderLate, st.OtherPct)
}

func (b *bench) printConsults(w io.Writer) {
	if len(b.Consults) == 0 {
		return
	}
	fmt.Fprintf(w, "\nrelayed 1:1 video consultations on this machine (both parties relayed, relay to relay; per party and direction:\n"+
		"Opus 50 × %d B/s, video 30 frames/s at 1.5 Mbit/s in bursts of ≤ %d B datagrams), highest number with loss ≤ %.1f %% and p99 one-way delay ≤ %.0f ms:\n",
		audioPayload, maxDatagram, consultMaxLoss, consultMaxP99)
	for _, c := range b.Consults {
		if c.Skip != "" && len(c.Steps) == 0 {
			fmt.Fprintf(w, "%-11s skipped: %s\n", c.Server, c.Skip)
			continue
		}
		capped := ""
		if c.Capped {
			capped = " (the -consult-max cap: the limit is higher)"
		}
		var at *ConsultStep
		for i := range c.Steps {
			if c.Steps[i].Pass && c.Steps[i].Consultations == c.Max {
				at = &c.Steps[i]
			}
		}
		var steps []string
		for _, st := range c.Steps {
			mark := "✓"
			if !st.Pass {
				mark = "✗"
			}
			steps = append(steps, fmt.Sprintf("%d%s", st.Consultations, mark))
		}
		fmt.Fprintf(w, "%-11s %4d consultations%s; steps %s\n", c.Server, c.Max, capped, strings.Join(steps, " "))
		if at != nil {
			fmt.Fprintf(w, "%-11s at %d: loss %.3f%%, one-way p50 %.2f ms, p99 %.2f ms; server %.0f%% of a CPU, %.2f µs per relayed packet; load generator %.0f%%\n",
				"", at.Consultations, at.LossPct, at.P50, at.P99, at.ServerCPUPct, at.ServerCPUus, at.LoadCPUPct)
		}
		if c.Skip != "" {
			fmt.Fprintf(w, "%-11s stopped: %s\n", "", c.Skip)
		}
	}
}
