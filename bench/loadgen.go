package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferryrelay/ferry/internal/mmsg"
	"github.com/ferryrelay/ferry/relay"
)

// echoPeer is the relay's peer: UDP sockets on 127.0.0.2 (SO_REUSEPORT, one per CPU) that
// send every datagram back.
type echoPeer struct {
	socks  []*net.UDPConn
	addr   netip.AddrPort
	wg     sync.WaitGroup
	echoed atomic.Int64 // datagrams sent back: each one the relay carried twice
}

func newEchoPeer(n int) (*echoPeer, error) {
	socks, err := relay.ListenUDP(context.Background(), "udp4", "127.0.0.2:0", n, 4<<20)
	if err != nil {
		return nil, err
	}
	e := &echoPeer{socks: socks}
	e.addr = e.socks[0].LocalAddr().(*net.UDPAddr).AddrPort()
	for _, s := range e.socks {
		rc, err := s.SyscallConn()
		if err != nil {
			e.close()
			return nil, err
		}
		// Batched (recvmmsg/sendmmsg): the echo peer shares the CPUs with the servers.
		e.wg.Go(func() {
			r, w, in := mmsg.NewReader(), mmsg.NewWriter(), mmsg.NewBatch(64, 2048)
			for {
				n, err := r.Read(rc, in)
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if n > 0 {
					sent, _ := w.Write(rc, false, in, n) // back to each datagram's source
					e.echoed.Add(int64(sent))
				}
			}
		})
	}
	return e, nil
}

func (e *echoPeer) close() {
	for _, s := range e.socks {
		s.Close()
	}
	e.wg.Wait()
}

// session is one allocation with a channel bound to the echo peer.
type session struct {
	c    *turnClient
	num  uint16
	turn bool // holds an allocation (deleted on close)
}

// batchIO moves one session's frames in batches, as a busy client does: recvmmsg and
// sendmmsg on UDP, many frames per read and per write on TCP/TLS. The load generator shares
// the CPUs with the server it measures, so it must cost less than the server.
type batchIO struct {
	c      *turnClient
	frame  []byte // template: channel header and payload
	frames [][]byte
	cat    []byte // stream: frames written at once
	rc     syscall.RawConn
	r      *mmsg.Reader
	w      *mmsg.Writer
	in, ob *mmsg.Batch
	dst    netip.AddrPort
}

func newBatchIO(s *session, frame []byte, n int) (*batchIO, error) {
	b := &batchIO{c: s.c, frame: frame, frames: make([][]byte, 0, 64)}
	if s.c.stream {
		b.cat = make([]byte, 0, n*len(frame))
		return b, nil
	}
	uc := s.c.conn.(*net.UDPConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	b.rc, b.r, b.w = rc, mmsg.NewReader(), mmsg.NewWriter()
	b.in, b.ob = mmsg.NewBatch(64, 2048), mmsg.NewBatch(n, len(frame))
	b.dst = uc.RemoteAddr().(*net.UDPAddr).AddrPort()
	return b, nil
}

// send writes k time-stamped frames, numbered from seq; k is at most the n it was made for.
func (b *batchIO) send(k int, seq int64) error {
	if b.c.stream {
		b.cat = b.cat[:0]
		for i := range k {
			stamp(b.frame, seq+int64(i))
			b.cat = append(b.cat, b.frame...)
		}
		_, err := b.c.conn.Write(b.cat)
		return err
	}
	for i := range k {
		copy(b.ob.Bufs[i], b.frame)
		stamp(b.ob.Bufs[i], seq+int64(i))
		b.ob.Lens[i], b.ob.Addrs[i] = len(b.frame), b.dst
	}
	_, err := b.w.Write(b.rc, false, b.ob, k)
	return err
}

// recv waits for at least one frame and returns every frame already received; the frames
// stay valid until the next recv.
func (b *batchIO) recv() ([][]byte, error) {
	b.frames = b.frames[:0]
	if b.c.stream {
		f, err := b.c.readFrame()
		if err != nil {
			return nil, err
		}
		b.frames = append(b.frames, f)
		for b.c.buffered() {
			f, _ = b.c.readFrame()
			b.frames = append(b.frames, f)
		}
		return b.frames, nil
	}
	n, err := b.r.Read(b.rc, b.in)
	if err != nil {
		return nil, err
	}
	for i := range n {
		b.frames = append(b.frames, b.in.Bufs[i][:b.in.Lens[i]])
	}
	return b.frames, nil
}

// openSessions allocates n allocations over transport and binds each a channel to peer.
// For the raw forwarder (no TURN), channel i is the forwarder's pair i.
func openSessions(target server, transport string, n int, peer netip.AddrPort) ([]*session, error) {
	var out []*session
	for i := range n {
		c, err := dialTURN(transport, target.addr(transport))
		if err != nil {
			closeSessions(out)
			return nil, err
		}
		s := &session{c: c, num: 0x4000 + uint16(i), turn: target.turn}
		if target.turn {
			if _, err := c.allocate(target.secret, fmt.Sprintf("bench-%d", i)); err != nil {
				c.Close()
				closeSessions(out)
				return nil, err
			}
			if err := c.channelBind(s.num, peer); err != nil {
				c.Close()
				closeSessions(out)
				return nil, err
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// closeSessions deletes the sessions' allocations and closes their sockets. A UDP
// allocation left behind would outlive its socket, and a later client that happens to get
// the same local port would meet it (437).
func closeSessions(ss []*session) {
	for _, s := range ss {
		if s.turn {
			_ = s.c.deallocate()
		}
		s.c.Close()
	}
}

// loadResult is one load run.
type loadResult struct {
	Sent, Received int64
	Duration       time.Duration
	RTTs           []time.Duration // a sample
	ServerCPU      time.Duration
	LoadCPU        time.Duration // this process: load generator and echo peer
}

func (r loadResult) lossPct() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Sent-r.Received) / float64(r.Sent)
}

// roundTrips per second; each round trip is two relayed packets.
func (r loadResult) rate() float64 { return float64(r.Received) / r.Duration.Seconds() }

func (r loadResult) percentile(p float64) time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	s := slices.Clone(r.RTTs)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

const stampLen = 16 // payload starts with send time (ns) and a sequence number

// closedLoop keeps window packets in flight per session for dur: capacity. Each batch of
// frames that comes back is answered with as many new ones, in one write.
func closedLoop(ss []*session, size, window int, dur time.Duration, serverPID int) loadResult {
	return runLoad(ss, size, dur, serverPID, func(s *session, frame []byte, stop <-chan struct{}, res *clientResult) {
		io, err := newBatchIO(s, frame, window)
		if err != nil {
			return
		}
		if io.send(window, res.sent) != nil {
			return
		}
		res.sent += int64(window)
		for {
			_ = s.c.conn.SetReadDeadline(time.Now().Add(time.Second))
			frames, err := io.recv()
			if err != nil {
				if isTimeout(err) && !stopped(stop) { // lost: refill the window
					if io.send(window, res.sent) != nil {
						return
					}
					res.sent += int64(window)
					continue
				}
				return
			}
			for _, f := range frames {
				res.record(f)
			}
			if stopped(stop) {
				res.drain(s, res.sent-res.recv)
				return
			}
			k := min(len(frames), window)
			if io.send(k, res.sent) != nil {
				return
			}
			res.sent += int64(k)
		}
	})
}

// openLoop offers rate round trips per second in total, evenly paced: loss and latency.
func openLoop(ss []*session, size int, rate float64, dur time.Duration, serverPID int) loadResult {
	perClient := rate / float64(len(ss))
	const maxBurst = 64
	return runLoad(ss, size, dur, serverPID, func(s *session, frame []byte, stop <-chan struct{}, res *clientResult) {
		out, err1 := newBatchIO(s, frame, maxBurst)
		in, err2 := newBatchIO(s, nil, 1)
		if err1 != nil || err2 != nil {
			return
		}
		done := make(chan struct{})
		var recv atomic.Int64
		go func() {
			defer close(done)
			for {
				_ = s.c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				frames, err := in.recv()
				if err != nil {
					return
				}
				for _, f := range frames {
					res.recordConcurrent(f, &recv)
				}
			}
		}()
		start := time.Now()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !stopped(stop) {
			<-tick.C
			due := int64(perClient * time.Since(start).Seconds())
			for res.sent < due { // what is due this millisecond, in one write
				k := int(min(due-res.sent, maxBurst))
				if out.send(k, res.sent) != nil {
					return
				}
				res.sent += int64(k)
			}
		}
		<-done
		res.recv = recv.Load()
	})
}

type clientResult struct {
	sent, recv int64
	mu         sync.Mutex
	rtts       []time.Duration
}

func stamp(frame []byte, seq int64) {
	binary.BigEndian.PutUint64(frame[4:], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint64(frame[12:], uint64(seq))
}

func (r *clientResult) record(f []byte) {
	r.recv++
	if len(f) >= 4+stampLen && len(r.rtts) < cap(r.rtts) && r.recv%8 == 0 {
		r.rtts = append(r.rtts, time.Duration(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(f[4:]))))
	}
}

func (r *clientResult) recordConcurrent(f []byte, recv *atomic.Int64) {
	n := recv.Add(1)
	if len(f) >= 4+stampLen && n%4 == 0 {
		d := time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(f[4:])))
		r.mu.Lock()
		if len(r.rtts) < cap(r.rtts) {
			r.rtts = append(r.rtts, d)
		}
		r.mu.Unlock()
	}
}

// drain reads what is still in flight after the stop, for at most 500 ms.
func (r *clientResult) drain(s *session, outstanding int64) {
	for ; outstanding > 0; outstanding-- {
		_ = s.c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		f, err := s.c.readFrame()
		if err != nil {
			return
		}
		r.record(f)
	}
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// runLoad runs one load function per session for dur, measuring the server's CPU time over
// the same window.
func runLoad(ss []*session, size int, dur time.Duration, serverPID int,
	f func(s *session, frame []byte, stop <-chan struct{}, res *clientResult)) loadResult {
	stop := make(chan struct{})
	results := make([]*clientResult, len(ss))
	var wg sync.WaitGroup
	cpu0, _ := cpuTime(serverPID)
	self0, _ := cpuTime(os.Getpid())
	start := time.Now()
	for i, s := range ss {
		results[i] = &clientResult{rtts: make([]time.Duration, 0, 1<<16)}
		frame := s.c.frame(s.num, max(size, stampLen))
		wg.Go(func() { f(s, frame, stop, results[i]) })
	}
	time.Sleep(dur)
	close(stop)
	elapsed := time.Since(start)
	cpu1, _ := cpuTime(serverPID)
	self1, _ := cpuTime(os.Getpid())
	wg.Wait()
	var out loadResult
	out.Duration = elapsed
	out.ServerCPU = cpu1 - cpu0
	out.LoadCPU = self1 - self0
	for _, r := range results {
		out.Sent += r.sent
		out.Received += r.recv
		out.RTTs = append(out.RTTs, r.rtts...)
	}
	for _, s := range ss {
		_ = s.c.conn.SetReadDeadline(time.Time{})
	}
	return out
}

// allocateMany creates n UDP allocations with authentication from workers goroutines, each
// from its own socket, and returns them (held open) and the time the allocations took. The
// sockets are opened before the clock starts: the measurement is the server's Allocate
// handling (the 401 challenge and the authenticated request), not socket creation here.
func allocateMany(target server, run, n, workers int) ([]*turnClient, time.Duration, error) {
	clients := make([]*turnClient, n)
	for i := range clients {
		c, err := dialTURNFrom(run, "udp", target.addr("udp"))
		if err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return nil, 0, err
		}
		clients[i] = c
	}
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				if _, err := clients[i].allocate(target.secret, fmt.Sprintf("rss-%d", i)); err != nil {
					firstErr.Store(fmt.Errorf("allocation %d: %w", i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		for _, c := range clients {
			c.Close()
		}
		return nil, elapsed, err
	}
	return clients, elapsed, nil
}

func releaseAll(clients []*turnClient, workers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(clients) {
					return
				}
				if c := clients[i]; c != nil {
					_ = c.deallocate()
					c.Close()
				}
			}
		})
	}
	wg.Wait()
}
