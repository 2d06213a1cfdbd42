package mmsg

import (
	"bytes"
	"net"
	"testing"
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

// A batch written with sendmmsg arrives whole, and recvmmsg reads it back in one call with
// the right lengths and source addresses, for IPv4 and IPv6, without allocating.
func TestBatchRoundTrip(t *testing.T) {
	for _, tc := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(tc.network, func(t *testing.T) {
			a, b := pair(t, tc.network, tc.ip)
			ra, _ := a.SyscallConn()
			rb, _ := b.SyscallConn()
			w, r := NewWriter(), NewReader()
			wb, in := NewBatch(8, 2048), NewBatch(8, 2048)
			dst := b.LocalAddr().(*net.UDPAddr).AddrPort()
			for i := range 5 {
				wb.Lens[i] = 10 + i
				wb.Addrs[i] = dst
				wb.Bufs[i][0] = byte(i)
			}
			if n, err := w.Write(ra, IsV6(a), wb, 5); n != 5 || err != nil {
				t.Fatalf("write: %d %v", n, err)
			}
			got := 0
			for got < 5 {
				n, err := r.Read(rb, in)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < n; i++ {
					if in.Lens[i] != 10+got || in.Bufs[i][0] != byte(got) || in.Addrs[i] != a.LocalAddr().(*net.UDPAddr).AddrPort() {
						t.Fatalf("datagram %d: len %d first %d from %s", got, in.Lens[i], in.Bufs[i][0], in.Addrs[i])
					}
					got++
				}
			}
			allocs := testing.AllocsPerRun(100, func() {
				wb.Lens[0] = 10
				w.Write(ra, false, wb, 1)
				r.Read(rb, in)
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per batch", allocs)
			}
		})
	}
}

// A truncated datagram is flagged, never passed off as whole.
func TestTruncationFlagged(t *testing.T) {
	a, b := pair(t, "udp4", "127.0.0.1")
	if _, err := a.WriteTo(make([]byte, 300), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	rb, _ := b.SyscallConn()
	in := NewBatch(2, 100)
	n, err := NewReader().Read(rb, in)
	if err != nil || n != 1 || !in.Trunc[0] {
		t.Fatalf("n %d trunc %v err %v", n, in.Trunc[0], err)
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
