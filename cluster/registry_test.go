package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/internal/redistest"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// fakeRelay is a relay's state as its heartbeat reports it.
type fakeRelay struct {
	mu    sync.Mutex
	state RelayState
}

func (f *fakeRelay) get() RelayState { f.mu.Lock(); defer f.mu.Unlock(); return f.state }

func (f *fakeRelay) set(fn func(*RelayState)) { f.mu.Lock(); fn(&f.state); f.mu.Unlock() }

func startRelay(t *testing.T, srv *redistest.Server, id, region string, port int) (*Heartbeat, *fakeRelay) {
	t.Helper()
	f := &fakeRelay{state: RelayState{URLs: []signaling.URL{{Scheme: "turn", Host: "127.0.0.1", Port: port, Transport: "udp"}}}}
	h, err := NewHeartbeat(HeartbeatConfig{Client: newClient(t, srv), ID: id, Region: region, Version: "test",
		Role: "relay", Relay: f.get, AdminURL: "http://127.0.0.1:1", Retention: 48 * time.Hour,
		Interval: 100 * time.Millisecond, TTL: 400 * time.Millisecond, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h, f
}

func newRegistry(t *testing.T, srv *redistest.Server, reg prometheus.Registerer) *Registry {
	t.Helper()
	r, err := NewRegistry(RegistryConfig{Client: newClient(t, srv), Refresh: 50 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// pickPort picks a relay and returns its port (0 when it fell back).
func pickPort(r *Registry, region, affinity string) int {
	urls, ok := r.PickRelay(region, affinity)
	if !ok {
		return 0
	}
	return urls[0].Port
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRegistryPicksEachHealthyRelayInTurnAndDropsDrainingAndDead(t *testing.T) {
	srv := redistest.Start(t)
	h1, _ := startRelay(t, srv, "r1", "", 1001)
	_, f2 := startRelay(t, srv, "r2", "", 1002)
	_, _ = startRelay(t, srv, "r3", "", 1003)
	reg := prometheus.NewRegistry()
	r := newRegistry(t, srv, reg)
	waitFor(t, 2*time.Second, "three relays registered", func() bool { n, _ := r.Relays(); return len(n) == 3 })

	seen := map[int]int{}
	for range 30 {
		seen[pickPort(r, "", "")]++
	}
	if seen[1001] != 10 || seen[1002] != 10 || seen[1003] != 10 {
		t.Fatalf("equal load: picks %v, want 10 each", seen)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ferry_cluster_relays Relays in the cluster registry as this ICE endpoint last read it, by state: healthy (handed out), draining, full (over its readiness capacity).
# TYPE ferry_cluster_relays gauge
ferry_cluster_relays{state="draining"} 0
ferry_cluster_relays{state="full"} 0
ferry_cluster_relays{state="healthy"} 3
`), "ferry_cluster_relays"); err != nil {
		t.Fatal(err)
	}

	// r2 drains: it is not handed out from the next heartbeat on.
	f2.set(func(s *RelayState) { s.Draining = true })
	waitFor(t, time.Second, "draining relay left out", func() bool {
		for range 6 {
			if pickPort(r, "", "") == 1002 {
				return false
			}
		}
		return true
	})
	// r1 stops (its entry is removed) ...
	_ = h1.Close()
	waitFor(t, time.Second, "stopped relay left out", func() bool {
		for range 6 {
			if p := pickPort(r, "", ""); p != 1003 {
				return false
			}
		}
		return true
	})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ferry_cluster_relays Relays in the cluster registry as this ICE endpoint last read it, by state: healthy (handed out), draining, full (over its readiness capacity).
# TYPE ferry_cluster_relays gauge
ferry_cluster_relays{state="draining"} 1
ferry_cluster_relays{state="full"} 0
ferry_cluster_relays{state="healthy"} 1
`), "ferry_cluster_relays"); err != nil {
		t.Fatal(err)
	}
}

// A relay that dies without a word (its heartbeat stops) leaves the registry at its TTL.
func TestRegistryForgetsARelayWhoseHeartbeatStops(t *testing.T) {
	srv := redistest.Start(t)
	_, _ = startRelay(t, srv, "r1", "", 1001)
	client := newClient(t, srv)
	// r2's heartbeat is written once by hand and never again, as by a killed process.
	entry, _ := json.Marshal(Node{ID: "r2", URLs: []NodeURL{{Scheme: "turn", Host: "127.0.0.1", Port: 1002, Transport: "udp"}}})
	ctx := context.Background()
	client.Set(ctx, relayKey+"r2", entry, 400*time.Millisecond)
	client.ZAdd(ctx, relaysKey, redisZ(time.Now().Add(400*time.Millisecond), "r2"))
	r := newRegistry(t, srv, nil)
	waitFor(t, time.Second, "both relays", func() bool { n, _ := r.Relays(); return len(n) == 2 })
	waitFor(t, 2*time.Second, "dead relay forgotten", func() bool { n, _ := r.Relays(); return len(n) == 1 })
}

func TestRegistryLeastLoadedRegionAndRoomAffinity(t *testing.T) {
	srv := redistest.Start(t)
	_, f1 := startRelay(t, srv, "r1", "eu", 1001)
	_, f2 := startRelay(t, srv, "r2", "eu", 1002)
	_, _ = startRelay(t, srv, "r3", "us", 1003)
	f1.set(func(s *RelayState) { s.Allocations = 50 })
	f2.set(func(s *RelayState) { s.Allocations = 10 })
	r := newRegistry(t, srv, nil)
	waitFor(t, 2*time.Second, "loads registered", func() bool {
		n, _ := r.Relays()
		return len(n) == 3 && n[0].Allocations == 50
	})
	if p := pickPort(r, "", ""); p != 1003 {
		t.Fatalf("least loaded: got %d, want r3 (no allocations)", p)
	}
	if p := pickPort(r, "eu", ""); p != 1002 {
		t.Fatalf("region eu: got %d, want r2 (less loaded of eu)", p)
	}
	if p := pickPort(r, "mars", ""); p == 0 {
		t.Fatal("an unknown region must still get a relay")
	}
	// Both participants of a room get one relay, from any endpoint.
	other := newRegistry(t, srv, nil)
	waitFor(t, 2*time.Second, "second endpoint reads", func() bool { n, _ := other.Relays(); return len(n) == 3 })
	spread := map[int]bool{}
	for i := range 20 {
		room := fmt.Sprintf("room-%d", i)
		p := pickPort(r, "", room)
		if q := pickPort(other, "", room); q != p || pickPort(r, "", room) != p {
			t.Fatalf("room %s: %d, %d", room, p, q)
		}
		spread[p] = true
	}
	if len(spread) < 2 {
		t.Fatalf("rooms all on one relay: %v", spread)
	}
}

// When Redis stops, the endpoint falls back to its configured URLs (counted); when it is
// back, heartbeats and reads recover by themselves.
func TestRegistryFallsBackWhileRedisIsDownAndRecovers(t *testing.T) {
	srv := redistest.Start(t)
	_, _ = startRelay(t, srv, "r1", "", 1001)
	reg := prometheus.NewRegistry()
	r := newRegistry(t, srv, reg)
	waitFor(t, time.Second, "relay registered", func() bool { return pickPort(r, "", "") == 1001 })

	srv.Stop()
	waitFor(t, 5*time.Second, "fallback", func() bool { return pickPort(r, "", "") == 0 })
	if n := testutil.ToFloat64(r.fallbacks.WithLabelValues(fallbackUnreachable)); n < 1 {
		t.Fatalf("fallbacks counted: %v", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ferry_cluster_registry_up 1 when the last read of the cluster registry in Redis worked, 0 when ICE answers fall back to the configured URLs.
# TYPE ferry_cluster_registry_up gauge
ferry_cluster_registry_up 0
`), "ferry_cluster_registry_up"); err != nil {
		t.Fatal(err)
	}
	srv.Restart() // empty: the heartbeat must write the entry again
	waitFor(t, 10*time.Second, "recovered", func() bool { return pickPort(r, "", "") == 1001 })
}

func TestFanOutReportsEveryNode(t *testing.T) {
	srv := redistest.Start(t)
	var got []string
	var mu sync.Mutex
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		mu.Lock()
		got = append(got, req.URL.Path+" "+req.Header.Get("Authorization")+" "+string(body))
		mu.Unlock()
		fmt.Fprint(w, `{"erased":{"allocations":1}}`)
	}))
	defer ok.Close()
	refused := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"status":"unauthorized"}`, http.StatusUnauthorized)
	}))
	defer refused.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()

	client := newClient(t, srv)
	for _, m := range []struct{ id, url string }{{"a", ok.URL}, {"b", refused.URL}, {"c", goneURL}} {
		hb, err := NewHeartbeat(HeartbeatConfig{Client: client, ID: m.id, AdminURL: m.url, Retention: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		_ = hb.Close()
	}
	members, err := Members(context.Background(), client)
	if err != nil || len(members) != 3 {
		t.Fatalf("members: %v %v", members, err)
	}
	res := FanOut(context.Background(), members, "/-/logs/erase", []byte(`{"ip":"192.0.2.1"}`), "tok", 5*time.Second)
	if !res[0].Done || res[1].Done || res[2].Done {
		t.Fatalf("results: %+v", res)
	}
	if !strings.Contains(res[1].Error, "401") || !strings.Contains(res[2].Error, "not reachable") {
		t.Fatalf("errors: %q, %q", res[1].Error, res[2].Error)
	}
	if len(got) != 1 || got[0] != `/-/logs/erase Bearer tok {"ip":"192.0.2.1"}` {
		t.Fatalf("request: %q", got)
	}
}

func redisZ(expiry time.Time, id string) redis.Z {
	return redis.Z{Score: float64(expiry.UnixMilli()), Member: id}
}
