package e2e

import (
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/relay"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// stepClock is a fake clock for the rooms and the relay alike.
type stepClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*stepTimer
}

type stepTimer struct {
	at   time.Time
	f    func()
	done bool
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *stepClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &stepTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool { c.mu.Lock(); defer c.mu.Unlock(); was := !t.done; t.done = true; return was }
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *stepTimer
		for _, t := range c.timers {
			if !t.done && !t.at.After(target) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			c.now = target
			c.mu.Unlock()
			return
		}
		next.done = true
		c.now = next.at
		c.mu.Unlock()
		next.f()
	}
}

// B03 against a real relay: the ice-servers push arrives before the welcome's credentials
// expire, and its credentials allocate on Ferry's relay after the old ones have expired.
func TestB03RoomRefreshAuthenticatesAgainstRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	clock := &stepClock{now: time.Now().Truncate(time.Second)}
	a, err := auth.New(auth.Config{Secrets: []string{"room-refresh-secret-0123456789"}, MaxTTL: 24 * time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := relay.New(relay.Config{Realm: "ferry", Auth: a, UDP: [][]*net.UDPConn{{uc}},
		RelayIPv4: netip.MustParseAddr("127.0.0.1"), Now: clock.Now, Registerer: prometheus.NewRegistry(), Limits: relay.Limits{UnauthRate: -1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	port := uc.LocalAddr().(*net.UDPAddr).Port
	tokens, _ := auth.NewRoomTokens(auth.RoomTokensConfig{Keys: []string{"room-refresh-signing-key-0123456789"}, Now: clock.Now})
	rooms, _ := signaling.NewMemoryRooms(signaling.MemoryRoomsConfig{Clock: clock})
	h := signaling.NewHandler(signaling.Config{Auth: a, URLs: signaling.BuildURLs("127.0.0.1", []int{port}, nil, nil),
		Rooms: &signaling.RoomsConfig{Tokens: tokens, Rooms: rooms, Clock: clock, CredentialTTL: 120 * time.Second,
			RefreshBefore: 30 * time.Second, PingInterval: time.Hour, IdleTimeout: 10 * time.Hour}})
	hs := httptest.NewServer(h)
	t.Cleanup(func() { _ = h.Close(); hs.Close() })
	room := auth.NewRoomID()
	tok, _ := tokens.Mint(auth.RoomClaims{Room: room, Role: auth.RoleHost, Expires: clock.Now().Add(time.Hour)})
	httpPort := hs.Listener.Addr().(*net.TCPAddr).Port
	p := joinRoom(t, httpPort, "http://x/r/"+room+"#t="+tok)
	welcome := p.expect(t, "welcome")
	first := turnCredential(t, welcome)

	clock.Advance(100 * time.Second)
	refresh := p.expect(t, "ice-servers")
	expires, _ := time.Parse(time.RFC3339, welcome["iceServersExpireAt"].(string))
	if !clock.Now().Before(expires) {
		t.Fatal("the refresh came after the credentials expired")
	}
	fresh := turnCredential(t, refresh)
	clock.Advance(30 * time.Second) // the welcome's credentials have expired now
	server := fmt.Sprintf("127.0.0.1:%d", port)
	if err := allocate(server, first); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("expired credentials must get 401, got %v", err)
	}
	if err := allocate(server, fresh); err != nil {
		t.Fatalf("the refreshed credentials must allocate: %v", err)
	}
}

func turnCredential(t *testing.T, m map[string]any) [2]string {
	t.Helper()
	for _, s := range m["iceServers"].([]any) {
		e := s.(map[string]any)
		if u, ok := e["username"].(string); ok {
			return [2]string{u, e["credential"].(string)}
		}
	}
	t.Fatalf("no TURN credential in %v", m)
	return [2]string{}
}

func allocate(server string, cred [2]string) error {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: cred[0], Password: cred[1], Realm: "ferry", LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		return err
	}
	rc, err := c.Allocate()
	if err != nil {
		return err
	}
	return rc.Close()
}
