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

	"golang.org/x/sys/unix"
)

// echoPeer is the relay's peer: UDP sockets on 127.0.0.2 (SO_REUSEPORT, one per CPU) that
// send every datagram back.
type echoPeer struct {
	socks []*net.UDPConn
	addr  netip.AddrPort
	wg    sync.WaitGroup
}

func reusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

func newEchoPeer(n int) (*echoPeer, error) {
	e := &echoPeer{}
	lc := net.ListenConfig{Control: reusePort}
	addr := "127.0.0.2:0"
	for range n {
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			e.close()
			return nil, err
		}
		s := pc.(*net.UDPConn)
		_ = s.SetReadBuffer(4 << 20)
		_ = s.SetWriteBuffer(4 << 20)
		e.socks = append(e.socks, s)
		addr = s.LocalAddr().String()
	}
	e.addr = e.socks[0].LocalAddr().(*net.UDPAddr).AddrPort()
	for _, s := range e.socks {
		e.wg.Go(func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := s.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				_, _ = s.WriteToUDPAddrPort(buf[:n], from)
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

// closedLoop keeps window packets in flight per session for dur: capacity.
func closedLoop(ss []*session, size, window int, dur time.Duration, serverPID int) loadResult {
	return runLoad(ss, size, dur, serverPID, func(s *session, frame []byte, stop <-chan struct{}, res *clientResult) {
		for range window {
			stamp(frame, res.sent)
			if _, err := s.c.conn.Write(frame); err != nil {
				return
			}
			res.sent++
		}
		for {
			_ = s.c.conn.SetReadDeadline(time.Now().Add(time.Second))
			f, err := s.c.readFrame()
			if err != nil {
				if isTimeout(err) { // lost: refill the window
					for i := int64(0); i < int64(window) && !stopped(stop); i++ {
						stamp(frame, res.sent)
						s.c.conn.Write(frame)
						res.sent++
					}
					continue
				}
				return
			}
			res.record(f)
			if stopped(stop) {
				res.drain(s, res.sent-res.recv)
				return
			}
			stamp(frame, res.sent)
			if _, err := s.c.conn.Write(frame); err != nil {
				return
			}
			res.sent++
		}
	})
}

// openLoop offers rate round trips per second in total, evenly paced: loss and latency.
func openLoop(ss []*session, size int, rate float64, dur time.Duration, serverPID int) loadResult {
	perClient := rate / float64(len(ss))
	return runLoad(ss, size, dur, serverPID, func(s *session, frame []byte, stop <-chan struct{}, res *clientResult) {
		done := make(chan struct{})
		var recv atomic.Int64
		go func() {
			defer close(done)
			for {
				_ = s.c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				f, err := s.c.readFrame()
				if err != nil {
					return
				}
				res.recordConcurrent(f, &recv)
			}
		}()
		start := time.Now()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !stopped(stop) {
			<-tick.C
			due := int64(perClient * time.Since(start).Seconds())
			for res.sent < due {
				stamp(frame, res.sent)
				if _, err := s.c.conn.Write(frame); err != nil {
					return
				}
				res.sent++
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
