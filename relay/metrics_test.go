package relay

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// After real traffic from pion's client, the relayed byte and packet counters equal exactly
// what the test sent and received in each direction, per client transport, live (before the
// allocation ends).
func TestRelayedTrafficCountersExact(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			env := newTestEnv(t) // a fresh registry per test
			echo := newUDPEcho(t, "127.0.0.2")
			cred := env.cred(t, "u-metrics", time.Hour)
			var conn net.PacketConn
			server := env.udp.String()
			if network == "udp" {
				c, err := net.ListenPacket("udp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				conn = c
			} else {
				c, err := net.Dial("tcp4", env.tcp.String())
				if err != nil {
					t.Fatal(err)
				}
				conn, server = turn.NewSTUNConn(c), env.tcp.String()
			}
			client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server,
				Conn: conn, Username: cred.Username, Password: cred.Password, Realm: testRealm,
				LoggerFactory: logging.NewDefaultLoggerFactory()})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if err := client.Listen(); err != nil {
				t.Fatal(err)
			}
			rc, err := client.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			peerAddr := net.UDPAddrFromAddrPort(echo.addr())
			var total int
			buf := make([]byte, 2000)
			const n = 60
			for i := range n {
				// At least 5 bytes: pion's client-side STUNConn treats an 8-byte ChannelData
				// frame (1-4 bytes of payload) as incomplete and stalls (pion/turn v5.1.3,
				// consumeSingleTURNFrame's 9-byte minimum). Ferry's own framing has no such limit.
				msg := bytes.Repeat([]byte{'x'}, 5+i*13)
				if _, err := rc.WriteTo(msg, peerAddr); err != nil {
					t.Fatal(err)
				}
				rc.SetReadDeadline(time.Now().Add(3 * time.Second))
				if got, _, err := rc.ReadFrom(buf); err != nil || got != len(msg) {
					t.Fatalf("echo %d: %d %v", i, got, err)
				}
				total += len(msg)
			}
			want := fmt.Sprintf(`
# HELP ferry_turn_relayed_bytes_total Application bytes relayed (payload only, no TURN framing), updated per packet.
# TYPE ferry_turn_relayed_bytes_total counter
ferry_turn_relayed_bytes_total{direction="client_to_peer",transport="%[1]s"} %[2]d
ferry_turn_relayed_bytes_total{direction="peer_to_client",transport="%[1]s"} %[2]d
# HELP ferry_turn_relayed_packets_total Packets relayed, updated per packet.
# TYPE ferry_turn_relayed_packets_total counter
ferry_turn_relayed_packets_total{direction="client_to_peer",transport="%[1]s"} %[3]d
ferry_turn_relayed_packets_total{direction="peer_to_client",transport="%[1]s"} %[3]d
`, network, total, n)
			// Only this transport's series: filter the others out of the comparison. The
			// counters move per packet, right after each write; the last one may still be on
			// its way when the echo is already back, so allow a moment to settle.
			for range 100 {
				got := onlyTransport(t, env.reg, network)
				if err = testutil.CollectAndCompare(got, strings.NewReader(want),
					"ferry_turn_relayed_bytes_total", "ferry_turn_relayed_packets_total"); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			if a := env.metric(t, "ferry_turn_allocations_active", "transport", network); a != 1 {
				t.Fatalf("active allocations: %v", a)
			}
		})
	}
}

// onlyTransport re-exposes the relayed counters of one transport from reg.
func onlyTransport(t *testing.T, reg *prometheus.Registry, transport string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewRegistry()
	for _, mf := range mfs {
		if mf.GetName() != "ferry_turn_relayed_bytes_total" && mf.GetName() != "ferry_turn_relayed_packets_total" {
			continue
		}
		vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: mf.GetName(), Help: mf.GetHelp()}, []string{"direction", "transport"})
		for _, m := range mf.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["transport"] == transport {
				vec.With(labels).Add(m.GetCounter().GetValue())
			}
		}
		c.MustRegister(vec)
	}
	return registryCollector{c}
}

type registryCollector struct{ reg *prometheus.Registry }

func (r registryCollector) Describe(chan<- *prometheus.Desc) {}
func (r registryCollector) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := r.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var names, values []string
			for _, l := range m.Label {
				names = append(names, l.GetName())
				values = append(values, l.GetValue())
			}
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil),
				prometheus.CounterValue, m.GetCounter().GetValue(), values...)
		}
	}
}

// seriesAndText gathers reg and returns the number of series and the exposition text.
func seriesAndText(t *testing.T, reg *prometheus.Registry) (int, string) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			n++
			for _, l := range m.Label {
				b.WriteString(l.GetValue())
				b.WriteByte(' ')
			}
		}
	}
	return n, b.String()
}

// C24: 1,000 allocations with distinct REST usernames leave exactly as many series as one
// user's allocations, and no label carries a user, an address or a timestamp.
func TestC24MetricCardinality(t *testing.T) {
	run := func(distinct bool) (int, string) {
		env := newTestEnv(t)
		echo := newUDPEcho(t, "127.0.0.2")
		for i := range 1000 {
			user := "u-0001"
			if distinct {
				user = fmt.Sprintf("u-%04d", i)
			}
			c := env.dial(t, "udp")
			cred := env.cred(t, user, time.Hour)
			if code, _ := c.allocate(cred.Username, cred.Password); code != 0 {
				t.Fatalf("allocation %d: %d", i, code)
			}
			if code, _ := c.do(stun.MethodCreatePermission, peerAttr{ap: echo.addr()}); code != 0 {
				t.Fatal("permission")
			}
			c.send(c.sendIndication(peerAttr{ap: echo.addr()}, []byte("x")))
			if code, _ := c.do(stun.MethodRefresh, lifetime(0)); code != 0 {
				t.Fatal("delete")
			}
			_ = c.conn.Close()
		}
		waitFor(t, func() bool { return env.srv.AllocationCount() == 0 })
		return seriesAndText(t, env.reg)
	}
	many, text := run(true)
	one, _ := run(false)
	if many != one {
		t.Fatalf("series with 1000 users: %d, with one user: %d", many, one)
	}
	for _, leak := range []string{"u-0", "127.0.0.", `="` + testRealm + `"`} {
		if strings.Contains(text, leak) {
			t.Fatalf("a label value contains %q", leak)
		}
	}
}
