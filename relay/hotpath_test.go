package relay

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// BenchmarkRelayRoundTrip relays 100-byte ChannelData through Ferry to an echo peer and back,
// 16 packets in flight, with and without the per-packet metrics: the pair measures what
// counting costs (target: within 3 %).
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, metrics := range []bool{true, false} {
		name := "metrics=on"
		if !metrics {
			name = "metrics=off"
		}
		b.Run(name, func(b *testing.B) { benchRoundTrip(b, !metrics) })
	}
}

func benchRoundTrip(b *testing.B, noMetrics bool) {
	env := newTestEnv(b, func(c *Config) { c.NoPacketMetrics = noMetrics })
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], a)
		}
	}()
	c := dialClient(b, "udp", env.udp, "")
	cred, _ := env.auth.Issue("bench", time.Hour)
	code, _ := c.allocate(cred.Username, cred.Password)
	if code != 0 {
		b.Fatalf("allocate: %d", code)
	}
	if code, _ := c.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.LocalAddr().(*net.UDPAddr).AddrPort()}); code != 0 {
		b.Fatalf("ChannelBind: %d", code)
	}
	frame := c.channelData(0x4000, make([]byte, 100))
	conn := c.conn.(*net.UDPConn)
	buf := make([]byte, 2048)
	const window = 16
	b.SetBytes(100)
	b.ResetTimer()
	inflight := 0
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		inflight++
		if inflight == window {
			conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := conn.Read(buf); err != nil {
				b.Fatalf("lost packets: %v", err)
			}
			inflight--
		}
	}
	for ; inflight > 0; inflight-- {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(buf); err != nil {
			b.Fatalf("lost packets: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}
