package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/internal/redistest"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/pion/webrtc/v4"
	"github.com/redis/go-redis/v9"
)

// clusterEnv is a cluster on loopback: three relays and two signaling instances sharing one
// real redis-server, with a shared TURN secret, room signing key and admin token.
type clusterEnv struct {
	redis   *redistest.Server
	dir     string
	secret  string
	apiKey  string
	cli     string // a configuration file for ferry commands (room create, logs --cluster)
	relays  []*ferryProc
	signals []*ferryProc
}

// fallbackPort is the port of http.ice_urls on the signaling instances: no relay is there,
// so an answer that names it fell back.
const fallbackPort = 9

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	e := &clusterEnv{redis: redistest.Start(t), dir: t.TempDir(), secret: "cluster-secret-0123456789abcdef"}
	write := func(name, content string) string {
		p := filepath.Join(e.dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secrets := write("turn-secrets", e.secret)
	roomKey := write("room-key", "room-signing-key-0123456789abcdef0123456789")
	token := write("admin-token", "admin-token-0123456789abcdef0123456789")
	key, sum, err := signaling.NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	e.apiKey = key
	common := fmt.Sprintf(`auth:
  secrets_file: %s
rooms:
  signing_keys_file: %s
  reconnect_grace: 5s
admin:
  listen: "127.0.0.1:0"
cluster:
  redis_url: %s
  admin_token_file: %s
  heartbeat_interval: 500ms
  heartbeat_ttl: 2s
`, secrets, roomKey, e.redis.URL(), token)
	e.cli = write("cli.yaml", common+"http:\n  public_url: https://consult.clinic.example\n")
	for i := range 3 {
		e.relays = append(e.relays, startFerry(t, common+fmt.Sprintf(`  node_id: relay-%d
server:
  role: relay
  public_host: 127.0.0.1
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: []
relay:
  bind_ip: 127.0.0.1
`, i+1)))
	}
	for i := range 2 {
		e.signals = append(e.signals, startFerry(t, common+fmt.Sprintf(`  node_id: signal-%d
server:
  role: signaling
http:
  listen: "127.0.0.1:0"
  ice_urls: ["turn:127.0.0.1:%d?transport=udp"]
api:
  keys: [{name: e2e, sha256: %s}]
  rate: -1
`, i+1, fallbackPort, hex.EncodeToString(sum[:]))))
	}
	return e
}

// turnPort asks signaling instance s for ICE servers and returns the port of the TURN URL.
func (e *clusterEnv) turnPort(t *testing.T, s *ferryProc, query string) int {
	t.Helper()
	cfg := fetchICEServers(t, s, e.apiKey, query)
	for _, srv := range cfg.ICEServers {
		for _, u := range srv.URLs {
			if strings.HasPrefix(u, "turn:") {
				_, rest, _ := strings.Cut(u, "127.0.0.1:")
				port, _ := strconv.Atoi(strings.TrimSuffix(rest, "?transport=udp"))
				return port
			}
		}
	}
	t.Fatalf("no turn: URL in %+v", cfg)
	return 0
}

// handedOut collects the relays n answers of s name.
func (e *clusterEnv) handedOut(t *testing.T, s *ferryProc, n int) map[int]int {
	t.Helper()
	seen := map[int]int{}
	for range n {
		seen[e.turnPort(t, s, "")]++
	}
	return seen
}

// within polls cond every 200 ms for at most d and returns how long it took.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

// roomLinksFrom creates a room with the cluster's signing key: host and guest links.
func (e *clusterEnv) roomLinks(t *testing.T) [2]string {
	t.Helper()
	out, err := exec.Command(ferryBinary(t), "room", "create", "--ttl", "1h", "--config", e.cli).CombinedOutput()
	if err != nil {
		t.Fatalf("room create: %v\n%s", err, out)
	}
	var links [2]string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "host link:"); ok {
			links[0] = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "guest link:"); ok {
			links[1] = strings.TrimSpace(v)
		}
	}
	return links
}

// The scale-out, end to end, with the real binary: three relays and two signaling
// instances on one Redis.
func TestClusterOnRedis(t *testing.T) {
	tt := t
	e := newClusterEnv(t)
	relayPorts := map[int]*ferryProc{}
	for _, r := range e.relays {
		relayPorts[r.udpPort] = r
	}
	s1, s2 := e.signals[0], e.signals[1]
	within(t, 10*time.Second, "both endpoints see three relays", func() bool {
		return metricValue(t, s1, `ferry_cluster_relays{state="healthy"}`) == 3 &&
			metricValue(t, s2, `ferry_cluster_relays{state="healthy"}`) == 3
	})

	t.Run("each healthy relay in turn", func(t *testing.T) {
		for _, s := range e.signals {
			seen := e.handedOut(t, s, 9)
			for port := range relayPorts {
				if seen[port] != 3 {
					t.Fatalf("9 answers under equal load: %v, want 3 for each relay %v", seen, relayPorts)
				}
			}
		}
	})

	var callRelay *ferryProc
	t.Run("room across instances", func(t *testing.T) {
		callRelay = e.roomAcrossInstances(t, relayPorts)
	})

	t.Run("Redis stopped and back", func(t *testing.T) {
		e.redisOutage(t, relayPorts)
	})

	// The relay that carried the call stays; of the others, one drains and one is killed.
	var others []*ferryProc
	for _, r := range e.relays {
		if r != callRelay {
			others = append(others, r)
		}
	}
	t.Run("drain and kill", func(t *testing.T) {
		e.drainAndKill(t, tt, others[0], others[1], callRelay)
	})

	t.Run("erase on every node", func(t *testing.T) {
		e.eraseEverywhere(t, callRelay, others[1])
	})

	// No node id reaches the endpoint's metrics as a label.
	_, scrape := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", s1.adminPort))
	if strings.Contains(scrape, "relay-1") || strings.Contains(scrape, "relay-2") {
		t.Error("a node id is in the endpoint's metrics")
	}
}

// roomAcrossInstances: the host on signaling-1, the guest on signaling-2: knock, admit,
// offer, answer and trickled candidates, and a pion/webrtc call relayed by the one relay
// both were handed. It returns that relay.
func (e *clusterEnv) roomAcrossInstances(t *testing.T, relays map[int]*ferryProc) *ferryProc {
	links := e.roomLinks(t)
	s1, s2 := e.signals[0], e.signals[1]
	host := joinRoom(t, s1.httpPort, links[0])
	hw := host.expect(t, "welcome")
	guest := joinRoom(t, s2.httpPort, links[1])
	gw := guest.expect(t, "welcome")
	if gw["state"] != "waiting" || hw["role"] != "host" {
		t.Fatalf("welcome: host %v guest %v", hw, gw)
	}
	host.expect(t, "knock")
	guest.send(t, map[string]any{"type": "name", "name": "Frau Regenbogen"})
	if knock := host.expect(t, "knock"); knock["name"] != "Frau Regenbogen" || knock["id"] != gw["you"] {
		t.Fatalf("knock from the other instance: %v", knock)
	}
	host.send(t, map[string]any{"type": "admit", "id": gw["you"]})
	adm := guest.expect(t, "admitted")
	host.expect(t, "peer-joined")

	hostCfg, guestCfg := iceConfig(t, hw), iceConfig(t, adm)
	hostURL, guestURL := hostCfg.ICEServers[len(hostCfg.ICEServers)-1].URLs[0], guestCfg.ICEServers[len(guestCfg.ICEServers)-1].URLs[0]
	if hostURL != guestURL {
		t.Fatalf("host and guest got different relays: %s, %s", hostURL, guestURL)
	}
	u, _ := url.Parse(strings.Replace(hostURL, "turn:", "turn://", 1))
	port, _ := strconv.Atoi(u.Port())
	relay := relays[port]
	if relay == nil {
		t.Fatalf("the room's relay %s is none of the cluster's", hostURL)
	}
	before := metricValue(t, relay, `ferry_turn_relayed_bytes_total{direction="client_to_peer",transport="udp"}`)

	hid, gid := hw["you"].(string), gw["you"].(string)
	hostPC := newRelayPC(t, hostCfg, host, gid)
	guestPC := newRelayPC(t, guestCfg, guest, hid)
	got := make(chan string, 1)
	guestPC.OnDataChannel(func(d *webrtc.DataChannel) {
		d.OnMessage(func(m webrtc.DataChannelMessage) {
			select {
			case got <- string(m.Data):
			default:
			}
		})
	})
	offerDataChannel(t, host, hostPC, gid, "hello across two instances")
	go pumpSignals(t, guest, guestPC)
	go pumpSignals(t, host, hostPC)
	expectRelayedCall(t, got, "hello across two instances", hostPC, guestPC)
	if after := metricValue(t, relay, `ferry_turn_relayed_bytes_total{direction="client_to_peer",transport="udp"}`); after <= before {
		t.Fatalf("the room's relay relayed nothing (%v -> %v bytes)", before, after)
	}
	// Redis holds the room's id and state, never the name or the SDP.
	dump := e.redisDump(t)
	for _, s := range []string{"Regenbogen", "a=ice-ufrag", "candidate:", "typ relay"} {
		if strings.Contains(dump, s) {
			t.Errorf("Redis holds %q:\n%s", s, dump)
		}
	}
	host.send(t, map[string]any{"type": "end"})
	return relay
}

// redisOutage: Redis stops; the endpoint answers from its configured URLs and says so;
// a room whose participants are on one instance goes on; Redis comes back (empty) and the
// registry recovers by itself.
func (e *clusterEnv) redisOutage(t *testing.T, relays map[int]*ferryProc) {
	s1 := e.signals[0]
	links := e.roomLinks(t)
	host := joinRoom(t, s1.httpPort, links[0])
	hw := host.expect(t, "welcome")
	guest := joinRoom(t, s1.httpPort, links[1])
	gw := guest.expect(t, "welcome")
	host.expect(t, "knock")
	host.send(t, map[string]any{"type": "admit", "id": gw["you"]})
	guest.expect(t, "admitted")
	host.expect(t, "peer-joined")

	fallbacks := metricValue(t, s1, `ferry_cluster_ice_fallbacks_total{reason="unreachable"}`)
	e.redis.Stop()
	took := within(t, 10*time.Second, "fallback URLs", func() bool { return e.turnPort(t, s1, "") == fallbackPort })
	t.Logf("the endpoint fell back %s after Redis stopped", took.Round(100*time.Millisecond))
	if metricValue(t, s1, `ferry_cluster_ice_fallbacks_total{reason="unreachable"}`) <= fallbacks ||
		metricValue(t, s1, "ferry_cluster_registry_up") != 0 {
		t.Fatal("the fallback is not in the metrics")
	}
	if !strings.Contains(s1.log.String(), "cluster registry cannot be read") {
		t.Fatal("the fallback is not in the log")
	}
	// The room on one instance goes on: offer, answer, candidates.
	host.send(t, map[string]any{"type": "offer", "to": gw["you"], "sdp": "v=0 while Redis is down"})
	if m := guest.expect(t, "offer"); m["sdp"] != "v=0 while Redis is down" || m["from"] != hw["you"] {
		t.Fatalf("offer during the outage: %v", m)
	}
	guest.send(t, map[string]any{"type": "answer", "to": hw["you"], "sdp": "v=0 answer"})
	host.expect(t, "answer")
	guest.send(t, map[string]any{"type": "candidate", "to": hw["you"], "candidate": map[string]any{"candidate": "c"}})
	host.expect(t, "candidate")

	e.redis.Restart()
	took = within(t, 15*time.Second, "registry recovered", func() bool {
		return relays[e.turnPort(t, s1, "")] != nil && metricValue(t, s1, `ferry_cluster_relays{state="healthy"}`) == 3
	})
	t.Logf("the registry recovered %s after Redis came back", took.Round(100*time.Millisecond))
	host.send(t, map[string]any{"type": "restart", "to": gw["you"]})
	guest.expect(t, "restart")
}

// drainAndKill: a relay that starts to drain (r2), and one that is killed (r3), are no
// longer handed out within 10 s; then only r1 is. whole is the test the draining relay's
// call lasts for.
func (e *clusterEnv) drainAndKill(t, whole *testing.T, r2, r3, r1 *ferryProc) {
	s1 := e.signals[0]
	// r2 has a call until the whole test ends, so that its drain lasts.
	user, pass := restCred(e.secret, "patient")
	c := newTurnClient(whole, r2, user, pass)
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate on the relay to drain: %v", err)
	}
	whole.Cleanup(func() { relayConn.Close() })
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/-/drain", r2.adminPort), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	took := within(t, 10*time.Second, "draining relay no longer handed out", func() bool {
		return e.handedOut(t, s1, 6)[r2.udpPort] == 0
	})
	t.Logf("a draining relay left the answers after %s", took.Round(100*time.Millisecond))
	if metricValue(t, s1, `ferry_cluster_relays{state="draining"}`) != 1 {
		t.Fatal("the draining relay is not counted")
	}

	if err := r3.cmd.Process.Kill(); err != nil { // no goodbye: its entry must expire
		t.Fatal(err)
	}
	<-r3.exited
	took = within(t, 10*time.Second, "killed relay no longer handed out", func() bool {
		seen := e.handedOut(t, s1, 6)
		return seen[r3.udpPort] == 0 && seen[r1.udpPort] == 6
	})
	t.Logf("a killed relay left the answers after %s", took.Round(100*time.Millisecond))
}

// eraseEverywhere: `ferry logs erase --cluster --ip 127.0.0.1` erases on every node that
// answers and reports the killed one as not done.
func (e *clusterEnv) eraseEverywhere(t *testing.T, callRelay, killed *ferryProc) {
	cmd := exec.Command(ferryBinary(t), "logs", "erase", "--cluster", "--ip", "127.0.0.1", "--config", e.cli)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("erase with a node down must fail:\n%s", out)
	}
	text := string(out)
	for i, r := range e.relays {
		node := fmt.Sprintf("relay-%d", i+1)
		want := node + ": done: erased"
		if r == killed {
			want = node + ": NOT DONE: not reachable"
		}
		if !strings.Contains(text, want) {
			t.Errorf("want %q:\n%s", want, text)
		}
	}
	for _, node := range []string{"signal-1", "signal-2"} {
		if !strings.Contains(text, node+": done: erased") {
			t.Errorf("%s not done:\n%s", node, text)
		}
	}
	if !strings.Contains(text, "1 of 5 node(s) NOT DONE") {
		t.Fatalf("the killed relay is not reported as not done:\n%s", text)
	}
	// The call's relay had records about 127.0.0.1; now it has none, nor has a signaling node.
	for _, p := range []*ferryProc{callRelay, e.signals[1]} {
		var recs struct {
			Allocations  []json.RawMessage `json:"allocations"`
			HTTPRequests []json.RawMessage `json:"http_requests"`
		}
		if err := json.Unmarshal([]byte(ferryCmd(t, p, "logs", "query", "--ip", "127.0.0.1")), &recs); err != nil {
			t.Fatal(err)
		}
		if len(recs.Allocations)+len(recs.HTTPRequests) != 0 {
			t.Errorf("records remain after the erase: %d allocations, %d HTTP requests", len(recs.Allocations), len(recs.HTTPRequests))
		}
	}
	for i, r := range e.relays {
		if r == callRelay && strings.Contains(text, fmt.Sprintf("relay-%d: done: erased 0 records", i+1)) {
			t.Errorf("the call's relay erased nothing:\n%s", text)
		}
	}
}

// redisDump is every key and value in Redis, as text.
func (e *clusterEnv) redisDump(t *testing.T) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: e.redis.Addr(), DisableIdentity: true})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = ", k)
		switch c.Type(ctx, k).Val() {
		case "string":
			b.WriteString(c.Get(ctx, k).Val())
		case "hash":
			fmt.Fprint(&b, c.HGetAll(ctx, k).Val())
		case "zset":
			fmt.Fprint(&b, c.ZRange(ctx, k, 0, -1).Val())
		}
		b.WriteString("\n")
	}
	return b.String()
}
