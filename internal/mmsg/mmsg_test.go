package mmsg

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func pair(t *testing.T, network, ip string) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// impl is one implementation of batched reads and writes: the package's API (recvmmsg and
// sendmmsg on Linux, one datagram per call elsewhere) and, on every system, the one-by-one
// fallback itself.
type impl struct {
	name     string
	read     func(rc syscall.RawConn, b *Batch) (int, error)
	write    func(rc syscall.RawConn, v6 bool, b *Batch, n int) (int, error)
	tryRead  func(fd uintptr, b *Batch) (int, error)
	noAllocs bool // reads and writes allocate nothing
}

func impls() []impl {
	r, w, sr, sw := NewReader(), NewWriter(), newSingleReader(), newSingleWriter()
	return []impl{
		{name: "api", read: r.Read, write: w.Write, tryRead: r.TryRead, noAllocs: runtime.GOOS == "linux"},
		{name: "single", read: sr.read, write: sw.write,
			tryRead: func(fd uintptr, b *Batch) (int, error) { return sr.readQueued(fd, b, false) }},
	}
}

// A batch written arrives whole, and a read gets it back with the right lengths and source
// addresses, for IPv4 and IPv6 (on Linux with one system call each way, without allocating).
func TestBatchRoundTrip(t *testing.T) {
	for _, im := range impls() {
		for _, tc := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
			t.Run(im.name+"/"+tc.network, func(t *testing.T) {
				a, b := pair(t, tc.network, tc.ip)
				ra, _ := a.SyscallConn()
				rb, _ := b.SyscallConn()
				wb, in := NewBatch(8, 2048), NewBatch(8, 2048)
				dst := b.LocalAddr().(*net.UDPAddr).AddrPort()
				for i := range 5 {
					wb.Lens[i] = 10 + i
					wb.Addrs[i] = dst
					wb.Bufs[i][0] = byte(i)
				}
				fallbackV6 := false
				ra.Control(func(fd uintptr) { fallbackV6 = isV6(fd) })
				if IsV6(a) != (tc.network == "udp6") || fallbackV6 != IsV6(a) {
					t.Fatalf("IsV6 = %t (fallback's: %t) on %s", IsV6(a), fallbackV6, tc.network)
				}
				if n, err := im.write(ra, IsV6(a), wb, 5); n != 5 || err != nil {
					t.Fatalf("write: %d %v", n, err)
				}
				got := 0
				for got < 5 {
					n, err := im.read(rb, in)
					if err != nil {
						t.Fatal(err)
					}
					for i := 0; i < n; i++ {
						if in.Lens[i] != 10+got || in.Bufs[i][0] != byte(got) || in.Addrs[i] != a.LocalAddr().(*net.UDPAddr).AddrPort() || in.Trunc[i] {
							t.Fatalf("datagram %d: len %d first %d from %s", got, in.Lens[i], in.Bufs[i][0], in.Addrs[i])
						}
						got++
					}
				}
				if !im.noAllocs {
					return
				}
				allocs := testing.AllocsPerRun(100, func() {
					wb.Lens[0] = 10
					im.write(ra, false, wb, 1)
					im.read(rb, in)
				})
				if allocs != 0 {
					t.Fatalf("%v allocations per batch", allocs)
				}
			})
		}
	}
}

// An IPv4 destination on a dual-stack (AF_INET6) socket goes out IPv4-mapped, and the
// answer's source reads back as plain IPv4.
func TestIPv4OnDualStackSocket(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
			if err != nil {
				t.Skipf("no dual-stack socket: %v", err)
			}
			defer a.Close()
			_, b := pair(t, "udp4", "127.0.0.1")
			if !IsV6(a) {
				t.Skip("the system gave an IPv4 socket for [::]")
			}
			ra, _ := a.SyscallConn()
			rb, _ := b.SyscallConn()
			wb, in := NewBatch(1, 64), NewBatch(1, 64)
			wb.Lens[0], wb.Addrs[0] = 7, b.LocalAddr().(*net.UDPAddr).AddrPort()
			if n, err := im.write(ra, true, wb, 1); n != 1 || err != nil {
				t.Fatalf("write: %d %v", n, err)
			}
			n, err := im.read(rb, in)
			if err != nil || n != 1 || in.Lens[0] != 7 || !in.Addrs[0].Addr().Is4() {
				t.Fatalf("read: %d %v from %s", n, err, in.Addrs[0])
			}
		})
	}
}

// TryRead, inside a caller's own callback, reads what is queued and says EAGAIN when
// nothing is, so that the caller waits for the socket instead of spinning.
func TestTryRead(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			a, b := pair(t, "udp4", "127.0.0.1")
			rb, _ := b.SyscallConn()
			in := NewBatch(8, 64)
			try := func() (n int, err error) {
				rb.Control(func(fd uintptr) { n, err = im.tryRead(fd, in) })
				return n, err
			}
			if n, err := try(); n != 0 || !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("empty socket: %d %v, want EAGAIN", n, err)
			}
			for i := range 3 {
				a.WriteTo([]byte{byte(i)}, b.LocalAddr())
			}
			got := 0
			for deadline := time.Now().Add(5 * time.Second); got < 3 && time.Now().Before(deadline); {
				n, err := try()
				if err != nil && !errors.Is(err, syscall.EAGAIN) {
					t.Fatal(err)
				}
				for i := 0; i < n; i++ {
					if in.Lens[i] != 1 || in.Bufs[i][0] != byte(got) {
						t.Fatalf("datagram %d: %v", got, in.Bufs[i][:in.Lens[i]])
					}
					got++
				}
			}
			if got != 3 {
				t.Fatalf("read %d of 3 datagrams", got)
			}
		})
	}
}

// A truncated datagram is flagged, never passed off as whole.
func TestTruncationFlagged(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			a, b := pair(t, "udp4", "127.0.0.1")
			if _, err := a.WriteTo(make([]byte, 300), b.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			rb, _ := b.SyscallConn()
			in := NewBatch(2, 100)
			n, err := im.read(rb, in)
			if err != nil || n != 1 || !in.Trunc[0] {
				t.Fatalf("n %d trunc %v err %v", n, in.Trunc[0], err)
			}
		})
	}
}

// A datagram the system refuses (here, one longer than UDP can carry) is skipped; the rest
// of the batch still goes, and the error is reported with the count.
func TestRefusedDatagramSkipped(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			a, b := pair(t, "udp4", "127.0.0.1")
			ra, _ := a.SyscallConn()
			rb, _ := b.SyscallConn()
			wb, in := NewBatch(3, 0), NewBatch(4, 2048)
			dst := b.LocalAddr().(*net.UDPAddr).AddrPort()
			wb.Bufs[0], wb.Bufs[1], wb.Bufs[2] = []byte("first"), make([]byte, 70000), []byte("third")
			for i := range 3 {
				wb.Lens[i], wb.Addrs[i] = len(wb.Bufs[i]), dst
			}
			n, err := im.write(ra, false, wb, 3)
			if n != 2 || err == nil {
				t.Fatalf("write: %d sent, %v; want 2 and the refusal", n, err)
			}
			var got []string
			for len(got) < 2 {
				k, err := im.read(rb, in)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < k; i++ {
					got = append(got, string(in.Bufs[i][:in.Lens[i]]))
				}
			}
			if got[0] != "first" || got[1] != "third" {
				t.Fatalf("received %q", got)
			}
		})
	}
}

// A read blocked on a socket returns net.ErrClosed when the socket is closed.
func TestReadUnblocksOnClose(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			_, b := pair(t, "udp4", "127.0.0.1")
			rb, _ := b.SyscallConn()
			done := make(chan error, 1)
			go func() {
				_, err := im.read(rb, NewBatch(2, 64))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			b.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("read after close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("read still blocked after close")
			}
		})
	}
}

// GSO sends equal-sized segments (and a shorter last one) as separate datagrams in one call.
func TestGSO(t *testing.T) {
	a, b := pair(t, "udp4", "127.0.0.1")
	ra, _ := a.SyscallConn()
	buf := bytes.Repeat([]byte{1}, 5*100+40)
	for i := range 6 {
		buf[i*100] = byte(i + 10)
	}
	w := NewWriter()
	used, err := w.WriteGSO(ra, false, buf, 100, b.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	if !used {
		t.Skip("no UDP GSO on this kernel")
	}
	got := make([]byte, 200)
	for i := range 6 {
		n, err := b.Read(got)
		want := 100
		if i == 5 {
			want = 40
		}
		if err != nil || n != want || got[0] != byte(i+10) {
			t.Fatalf("segment %d: %d bytes, first %d, %v", i, n, got[0], err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { w.WriteGSO(ra, false, buf[:200], 100, b.LocalAddr().(*net.UDPAddr).AddrPort()) }); n != 0 {
		t.Fatalf("%v allocations per GSO send", n)
	}
}

// A batch the kernel refuses for its size (here, more than a UDP datagram can carry) is
// left to the caller's sendmmsg fallback: nothing is lost and GSO stays on for the next.
func TestGSORefusedBatchFallsBack(t *testing.T) {
	if !GSOAvailable() {
		t.Skip("no UDP GSO on this kernel")
	}
	a, b := pair(t, "udp4", "127.0.0.1")
	ra, _ := a.SyscallConn()
	w := NewWriter()
	used, err := w.WriteGSO(ra, false, make([]byte, 70000), 35000, b.LocalAddr().(*net.UDPAddr).AddrPort())
	if used || err != nil {
		t.Fatalf("oversized GSO batch: used %t, %v; want a fallback", used, err)
	}
	if !GSOAvailable() {
		t.Fatal("one refused batch turned GSO off")
	}
	if used, err := w.WriteGSO(ra, false, make([]byte, 200), 100, b.LocalAddr().(*net.UDPAddr).AddrPort()); !used || err != nil {
		t.Fatalf("the next batch: used %t, %v", used, err)
	}
}
