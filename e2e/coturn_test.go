package e2e

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// startPeer runs coturn's turnutils_peer (a UDP echo peer) on 127.0.0.2 and waits until it
// echoes.
func startPeer(t *testing.T) int {
	t.Helper()
	bin := needTool(t, "turnutils_peer")
	port := freeUDPPort(t, "127.0.0.2")
	cmd := exec.Command(bin, "-L", "127.0.0.2", "-p", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	probe, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	buf := make([]byte, 64)
	for range 50 {
		_, _ = probe.Write([]byte("ping"))
		_ = probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := probe.Read(buf); err == nil {
			return port
		}
		time.Sleep(100 * time.Millisecond) // not listening yet: ICMP refused the probe
	}
	t.Fatal("turnutils_peer does not echo")
	return 0
}

var (
	uclientTotals = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	uclientLost   = regexp.MustCompile(`Total lost packets (\d+) \(`)
)

// Interop with a client no one here wrote: coturn's turnutils_uclient relays through Ferry to
// turnutils_peer with TURN REST credentials (-W secret), over UDP and TCP, through channels
// and through Send indications, and client to client (relay to relay, -y), with zero loss.
func TestInteropCoturnUclient(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	uclient := needTool(t, "turnutils_uclient")
	peerPort := startPeer(t)
	// coturn 4.6's uclient picks channel numbers up to 0x7FFF (RFC 5766), hence the legacy
	// flag; the default-config run below uses Send indications only.
	legacy := startFerry(t, `
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
relay:
  bind_ip: 127.0.0.1
  allowed_peers: [127.0.0.2/32]
  legacy_channel_numbers: true
`)
	strict := startFerry(t, `
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
relay:
  bind_ip: 127.0.0.1
  allowed_peers: [127.0.0.2/32]
`)
	const messages, clients = 200, 2
	for _, tc := range []struct {
		name  string
		ferry *ferryProc
		flags []string
	}{
		{"udp-channels", legacy, nil},
		{"tcp-channels", legacy, []string{"-t"}},
		{"udp-client-to-client", legacy, []string{"-y"}},
		{"tcp-client-to-client", legacy, []string{"-t", "-y"}},
		{"udp-send-indications-default-config", strict, []string{"-s"}},
		{"tcp-send-indications-default-config", strict, []string{"-t", "-s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			port := tc.ferry.udpPort
			for _, f := range tc.flags {
				if f == "-t" {
					port = tc.ferry.tcpPort
				}
			}
			args := append(tc.flags, "-W", tc.ferry.secret(t), "-u", "interop-"+tc.name, // a user each: the per-user quota
				"-e", "127.0.0.2", "-r", strconv.Itoa(peerPort), "-p", strconv.Itoa(port),
				"-n", strconv.Itoa(messages), "-l", "120", "-m", strconv.Itoa(clients), "-z", "5", "127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, uclient, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("uclient: %v\n%s", err, out)
			}
			totals := uclientTotals.FindAllSubmatch(out, -1)
			lost := uclientLost.FindSubmatch(out)
			if len(totals) == 0 || lost == nil {
				t.Fatalf("no totals in uclient output:\n%s", out)
			}
			last := totals[len(totals)-1]
			sent, _ := strconv.Atoi(string(last[1]))
			recv, _ := strconv.Atoi(string(last[2]))
			want := messages * clients
			if slices.Contains(tc.flags, "-y") {
				want *= 2 // -y runs each client as a pair, each side sending
			}
			if sent != want || recv != want || string(lost[1]) != "0" {
				t.Fatalf("sent %d, received %d, lost %s; want %d each, 0 lost\n%s", sent, recv, lost[1], want, out)
			}
		})
	}
}
