//go:build linux

package listen

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/internal/mmsg"
	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/sockopt"
	"golang.org/x/sys/unix"
)

// Event loops (Linux). Each socket i of every UDP listen address's SO_REUSEPORT group joins
// loop i, an epoll loop on one goroutine that waits in epoll_wait (a blocking system call);
// the relay sockets of the allocations its clients make join the same loop. The kernel hashes a client's 5-tuple to one socket of a group,
// so one loop serves both directions of an allocation: a datagram from a client or a peer
// costs one wakeup of that loop, a read and a write, as in coturn's design, with no
// hand-off between goroutines and no goroutine or poller state per allocation. Listener
// sockets leave Go's poller for this (alloc.FromConn), so nothing else wakes for them.
//
// A loop waiting in epoll_wait keeps its P (Go's scheduler slot) unless the scheduler takes
// it back for other work, which costs the loop a slow return from the system call. With a
// P to spare per loop (GOMAXPROCS raised by the number of loops; cmd/ferry does), nothing
// needs to take it back. The runtime's monitor also takes the P of a goroutine that has run
// one time slice (10 ms) without passing through the scheduler, as a loop would, and then
// wakes every 20 µs for a while to watch: so while packets flow, a loop passes through the
// scheduler at least every yieldEvery and waits no longer than that for the next event; an
// idle loop (a wait that timed out) waits without a limit and lets the runtime take its P.

// Tokens of a loop's epoll events: relay sockets report the table's tokens (below 1<<62);
// listener sockets tokenListener|index; the loop's eventfd tokenWake.
const (
	tokenListener = 1 << 62
	tokenWake     = 1 << 63
)

// yieldEvery is how often a busy loop passes through Go's scheduler, under the runtime's
// 10 ms time slice (forcePreemptNS in runtime/proc.go).
const yieldEvery = 5 * time.Millisecond

type eventLoop struct {
	l      *Listeners
	epfd   int
	wake   int // eventfd: Close wakes the loop
	socks  []*alloc.Socket
	local  []netip.AddrPort
	closed atomic.Bool
	reader *udpReader
	relay  *alloc.RelayReader
	got    int                   // datagrams the last listener read returned
	read   func(fd uintptr) bool // e.tryRead, bound once: a closure per read would allocate
}

// udpLoops are the event loops of all UDP listener sockets.
type udpLoops struct{ loops []*eventLoop }

// startUDP starts one event loop per socket index of the UDP groups.
func startUDP(l *Listeners, groups [][]*net.UDPConn) (udpEngine, error) {
	n := 0
	for _, g := range groups {
		if len(g) == 0 {
			return nil, errors.New("relay: UDP listener without sockets")
		}
		n = max(n, len(g))
	}
	u := &udpLoops{}
	for i := range n {
		loop, err := newEventLoop(l)
		if err != nil {
			_ = u.close()
			return nil, err
		}
		u.loops = append(u.loops, loop)
		for _, g := range groups {
			if i < len(g) {
				if err := loop.addListener(g[i]); err != nil {
					_ = u.close()
					return nil, err
				}
			}
		}
	}
	for _, loop := range u.loops {
		l.wg.Go(loop.run)
	}
	return u, nil
}

func newEventLoop(l *Listeners) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("relay: eventfd: %w", err)
	}
	e := &eventLoop{l: l, epfd: epfd, wake: wake}
	e.reader = newUDPReader(l, e)
	e.relay = l.cfg.Table.NewRelayReader()
	e.read = e.tryRead
	if err := e.Watch(wake, tokenWake); err != nil {
		_ = e.release()
		return nil, err
	}
	return e, nil
}

// addListener moves c into the loop.
func (e *eventLoop) addListener(c *net.UDPConn) error {
	local := sockopt.AddrPort(c.LocalAddr())
	s, err := alloc.FromConn(c, mmsg.IsV6(c))
	if err != nil {
		return fmt.Errorf("relay: UDP listener %s: %w", local, err)
	}
	e.socks, e.local = append(e.socks, s), append(e.local, local)
	var werr error
	if err := s.RawConn().Control(func(fd uintptr) {
		werr = e.Watch(int(fd), tokenListener|uint64(len(e.socks)-1))
	}); err != nil {
		return err
	}
	return werr
}

// Watch adds fd to the loop (level-triggered: a socket with more queued than one batch
// reads is reported again, so every socket gets its turn).
func (e *eventLoop) Watch(fd int, token uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(token), Pad: int32(token >> 32)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("relay: epoll add: %w", err)
	}
	return nil
}

// run waits for readable sockets and serves them until Close.
func (e *eventLoop) run() {
	events := make([]unix.EpollEvent, 64)
	timeout, yielded := -1, time.Now()
	for {
		n, err := unix.EpollWait(e.epfd, events, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if now := time.Now(); now.Sub(yielded) >= yieldEvery {
			runtime.Gosched()
			yielded = now
		}
		timeout = int(yieldEvery / time.Millisecond)
		if n == 0 {
			timeout = -1
		}
		for i := 0; i < n; i++ {
			token := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			switch {
			case token == tokenWake:
				if e.closed.Load() {
					return
				}
			case token&tokenListener != 0:
				e.readListener(int(token &^ tokenListener))
			default:
				e.relay.Readable(token)
			}
		}
	}
}

// readListener reads one batch from listener socket i and serves it.
func (e *eventLoop) readListener(i int) {
	s := e.socks[i]
	e.got = 0
	if err := s.RawConn().Read(e.read); err != nil || e.got <= 0 {
		return
	}
	e.reader.batch(s, e.local[i], e.got)
}

func (e *eventLoop) tryRead(fd uintptr) bool {
	e.got, _ = e.reader.r.TryRead(fd, e.reader.in)
	return true
}

// stop asks the loop to return.
func (e *eventLoop) stop() {
	e.closed.Store(true)
	var one [8]byte
	one[7] = 1
	_, _ = unix.Write(e.wake, one[:])
}

// release closes the loop's descriptors, once its goroutine has returned.
func (e *eventLoop) release() error {
	var errs []error
	for _, s := range e.socks {
		errs = append(errs, s.Close())
	}
	errs = append(errs, unix.Close(e.wake), unix.Close(e.epfd))
	return errors.Join(errs...)
}

// close stops every loop; the caller waits for their goroutines, then calls release.
func (u *udpLoops) close() error {
	for _, e := range u.loops {
		e.stop()
	}
	return nil
}

func (u *udpLoops) release() error {
	var errs []error
	for _, e := range u.loops {
		errs = append(errs, e.release())
	}
	return errors.Join(errs...)
}

func (u *udpLoops) addrs() (out []netip.AddrPort) {
	seen := map[netip.AddrPort]bool{}
	for _, e := range u.loops {
		for _, a := range e.local {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}
