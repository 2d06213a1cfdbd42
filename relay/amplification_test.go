package relay

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/stun/v4"
)

// unauthKind is one kind of request Ferry answers without credentials.
type unauthKind struct {
	name    string
	code    int  // the answer's error code; 0 for a success (Binding)
	browser bool // what Chromium sends (a 20-byte Binding, a 28-byte Allocate)
	needs   bool // needs a valid nonce for the client's address
	build   func(t *testing.T, nonce string, realmLen int) []byte
}

func unauthKinds() []unauthKind {
	req := func(m stun.Method) stun.Setter { return stun.NewType(m, stun.ClassRequest) }
	msg := func(t *testing.T, setters ...stun.Setter) []byte {
		return mustBuild(t, append([]stun.Setter{stun.TransactionID}, setters...)...).Raw
	}
	signed := func(t *testing.T, username, realm, nonce, password string, extra ...stun.Setter) []byte {
		s := append([]stun.Setter{req(stun.MethodAllocate), udpTransport}, extra...)
		s = append(s, stun.NewUsername(username), stun.NewRealm(realm), stun.NewNonce(nonce),
			stun.MessageIntegrity(auth.LongTermKey(username, realm, password)))
		return msg(t, s...)
	}
	realmOf := func(n int) string { return strings.Repeat("r", n) }
	return []unauthKind{
		{name: "Binding", browser: true, build: func(t *testing.T, _ string, _ int) []byte { return msg(t, stun.BindingRequest) }},
		{name: "Binding+FINGERPRINT", build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, stun.BindingRequest, stun.Fingerprint)
		}},
		{name: "Binding+CHANGE-REQUEST", code: 420, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, 6}})
		}},
		{name: "Allocate", code: 401, browser: true, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate), udpTransport)
		}},
		{name: "Allocate+FINGERPRINT", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate), udpTransport, stun.Fingerprint)
		}},
		{name: "Allocate, no attributes", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate))
		}},
		{name: "Refresh", code: 401, build: func(t *testing.T, _ string, _ int) []byte { return msg(t, req(stun.MethodRefresh)) }},
		{name: "CreatePermission", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodCreatePermission), peer("127.0.0.2:5000"))
		}},
		{name: "ChannelBind", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodChannelBind), chanNum(0x4000), peer("127.0.0.2:5000"))
		}},
		{name: "Connect", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodConnect), peer("127.0.0.2:5000"))
		}},
		{name: "ConnectionBind", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodConnectionBind), stun.RawAttribute{Type: stun.AttrConnectionID, Value: []byte{0, 0, 0, 1}})
		}},
		{name: "unknown method", code: 401, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, stun.NewType(stun.Method(0x0FF), stun.ClassRequest))
		}},
		{name: "Allocate+unknown attribute", code: 420, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate), udpTransport, stun.RawAttribute{Type: 0x7F00, Value: []byte{1}})
		}},
		{name: "Allocate+DONT-FRAGMENT", code: 420, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate), udpTransport, stun.RawAttribute{Type: stun.AttrDontFragment})
		}},
		{name: "Allocate+MESSAGE-INTEGRITY, no USERNAME", code: 400, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate), udpTransport, stun.MessageIntegrity([]byte("0123456789abcdef")))
		}},
		{name: "Allocate+USERNAME of 509 bytes", code: 400, build: func(t *testing.T, _ string, _ int) []byte {
			return msg(t, req(stun.MethodAllocate), udpTransport, stun.NewUsername(strings.Repeat("u", 509)))
		}},
		{name: "Allocate, nonce never issued", code: 438, build: func(t *testing.T, _ string, n int) []byte {
			return signed(t, "1800003600:u", realmOf(n), "AAAAAAAAAAAA", "x")
		}},
		{name: "Allocate, wrong realm", code: 401, needs: true, build: func(t *testing.T, nonce string, n int) []byte {
			return signed(t, "1800003600:u", realmOf(n-1)+"x", nonce, "x")
		}},
		{name: "Allocate, unknown user", code: 401, needs: true, build: func(t *testing.T, nonce string, n int) []byte {
			return signed(t, "nobody", realmOf(n), nonce, "x")
		}},
		{name: "Allocate, wrong password", code: 401, needs: true, build: func(t *testing.T, nonce string, n int) []byte {
			return signed(t, "4000000000:u", realmOf(n), nonce, "not the password")
		}},
	}
}

// C22, the amplification table: for every kind of request Ferry answers without credentials,
// over UDP from IPv4 and IPv6, and for realms of 1 to 127 bytes, an answer is at most twice
// its request, or there is none (counted as dropped: amplification). Browsers' own requests
// (Chromium: a 20-byte Binding, a 28-byte Allocate) are answered whenever the realm has at
// most 8 bytes, as turn.realm requires; over TCP every realm is answered. No answer carries
// SOFTWARE, OTHER-ADDRESS or RESPONSE-ORIGIN.
func TestC22AmplificationTable(t *testing.T) {
	kinds := unauthKinds()
	realms := []int{1, 4, 5, 8, 9, 12, 16, 32, 64, 127}
	worst := map[string]float64{}
	table := map[string][]string{}
	cells := map[string]map[int]string{} // row, realm length: ratio
	var mu sync.Mutex
	t.Run("realms", func(t *testing.T) {
		for _, n := range realms {
			t.Run(strconv.Itoa(n), func(t *testing.T) {
				t.Parallel()
				amplificationRow(t, n, kinds, func(row, cell string, ratio float64, kind string) {
					mu.Lock()
					defer mu.Unlock()
					if cells[row] == nil {
						cells[row] = map[int]string{}
					}
					cells[row][n] = cell
					worst[kind] = max(worst[kind], ratio)
				})
			})
		}
	})
	for row, byRealm := range cells {
		for _, n := range realms {
			table[row] = append(table[row], byRealm[n])
		}
	}
	var rows []string
	for row := range table {
		rows = append(rows, row)
	}
	sort.Strings(rows)
	head := fmt.Sprintf("%-47s realm bytes:", "response/request bytes")
	for _, n := range realms {
		head += fmt.Sprintf(" %4d", n)
	}
	t.Log(head)
	for _, row := range rows {
		t.Logf("%-60s %s", row, strings.Join(table[row], " "))
	}
	for _, k := range kinds {
		t.Logf("largest ratio answered, %-42s %.2f", k.name, worst[k.name])
	}
}

// amplificationRow sends every kind of request to a server whose realm has n bytes and
// records each answer's ratio (or "-" for none).
func amplificationRow(t *testing.T, n int, kinds []unauthKind, record func(row, cell string, ratio float64, kind string)) {
	realm := strings.Repeat("r", n)
	env := newTestEnv(t, withIPv6(t), func(c *Config) { c.Realm, c.UnauthRate = realm, 0 })
	for _, fam := range []struct {
		name   string
		server *net.UDPAddr
		local  string
	}{{"IPv4", env.udp, "127.0.0.8:0"}, {"IPv6", env.udp6, "[::1]:0"}} {
		c := dialClient(t, "udp", fam.server, fam.local)
		nonce := env.nonceFor(t, c)
		sent := map[[12]byte]int{}
		sizes := make([]int, len(kinds))
		for i, k := range kinds {
			raw := k.build(t, nonce, n)
			sizes[i] = len(raw)
			m := &stun.Message{Raw: raw}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			sent[m.TransactionID] = i
			c.send(raw)
		}
		answers := map[int]*stun.Message{}
		for {
			b, err := c.recv(300 * time.Millisecond)
			if err != nil {
				break
			}
			m := &stun.Message{Raw: b}
			if m.Decode() != nil {
				t.Fatalf("%s: an undecodable answer", fam.name)
			}
			answers[sent[m.TransactionID]] = m
		}
		for i, k := range kinds {
			m, answered := answers[i]
			row := fmt.Sprintf("%-42s %s", k.name, fam.name)
			if !answered {
				record(row, "   -", 0, k.name)
				if k.browser && n <= 8 && (fam.name == "IPv4" || k.name != "Binding") {
					t.Errorf("realm of %d bytes, %s: a browser's %s (%d bytes) got no answer", n, fam.name, k.name, sizes[i])
				}
				continue
			}
			ratio := float64(len(m.Raw)) / float64(sizes[i])
			record(row, fmt.Sprintf("%4.2f", ratio), ratio, k.name)
			if ratio > 2 {
				t.Errorf("realm of %d bytes, %s, %s: %d bytes answered with %d (%.2f)", n, fam.name, k.name, sizes[i], len(m.Raw), ratio)
			}
			if code := errCode(m); code != k.code {
				t.Errorf("realm of %d bytes, %s, %s: answered %d, want %d", n, fam.name, k.name, code, k.code)
			}
			for _, a := range []stun.AttrType{stun.AttrSoftware, stun.AttrOtherAddress, stun.AttrResponseOrigin} {
				if m.Contains(a) {
					t.Errorf("%s: the answer carries %s", k.name, a)
				}
			}
		}
	}
	if n >= 9 && env.metric(t, "ferry_turn_dropped_packets_total", "reason", "amplification") == 0 {
		t.Errorf("realm of %d bytes: no answer counted as withheld for amplification", n)
	}
	// Over TCP the handshake proved the address: a challenge whatever the realm.
	tc := env.dial(t, "tcp")
	if r, err := tc.transact(tc.build(stun.MethodAllocate, udpTransport)); err != nil || errCode(r) != 401 {
		t.Errorf("realm of %d bytes over TCP: %v %v, want 401", n, r, err)
	}
}

// nonceFor returns a valid nonce for c's address, asked for with a request large enough to
// be answered whatever the realm.
func (e *testEnv) nonceFor(t *testing.T, c *stunClient) string {
	t.Helper()
	big := mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport,
		stun.NewSoftware(strings.Repeat("x", 200)))
	r, err := c.transact(big)
	if err != nil || errCode(r) != 401 {
		t.Fatalf("challenge: %v %v", r, err)
	}
	var n stun.Nonce
	if err := n.GetFrom(r); err != nil {
		t.Fatal(err)
	}
	return n.String()
}

// C22, the pace: 2000 unauthenticated Allocates in 2 s (of the injected clock) from one
// source get the default burst plus the default rate for the 1.9 s from the first to the last
// in answers; the rest are dropped and counted; another source is unaffected.
func TestC22UnauthenticatedPace(t *testing.T) {
	env := newTestEnv(t, func(c *Config) {
		c.UnauthRate, c.UnauthBurst = 0, 0                              // the defaults
		if _, err := SetSocketBuffers(c.UDP[0][0], 4<<20); err != nil { // the flood must reach Ferry
			t.Fatal(err)
		}
	})
	flood := dialClient(t, "udp", env.udp, "127.0.0.9:0")
	if _, err := SetSocketBuffers(flood.conn.(*net.UDPConn), 4<<20); err != nil {
		t.Fatal(err)
	}
	answered := make(chan int)
	go func() {
		n := 0
		for {
			if _, err := flood.recv(500 * time.Millisecond); err != nil {
				answered <- n
				return
			}
			n++
		}
	}()
	for i := range 2000 {
		flood.send(mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport).Raw)
		if i%100 == 99 {
			time.Sleep(20 * time.Millisecond) // let Ferry read them
			env.clock.Add(100 * time.Millisecond)
		}
	}
	n := <-answered
	want := DefaultUnauthBurst + int(1.9*DefaultUnauthRate)
	t.Logf("flood: %d of 2000 answered", n)
	if n < want-2 || n > want+2 {
		t.Fatalf("answered %d, want about %d", n, want)
	}
	if got := env.metric(t, "ferry_turn_dropped_packets_total", "reason", "rate_limited"); got < float64(2000-want-2) {
		t.Fatalf("rate-limited drops counted: %v", got)
	}
	other := dialClient(t, "udp", env.udp, "127.0.0.10:0")
	if r, err := other.transact(mustBuild(t, stun.TransactionID, stun.BindingRequest)); err != nil || r.Type != stun.BindingSuccess {
		t.Fatalf("another source was throttled: %v %v", r, err)
	}
	if got := env.metric(t, "ferry_turn_requests_total", "method", "allocate", "result", "401"); got < float64(want-2) {
		t.Fatalf("401s counted: %v", got)
	}
}
