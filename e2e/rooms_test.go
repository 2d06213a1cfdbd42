package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/pion/webrtc/v4"
)

// wsPeer is a program holding a room link: a ferry.v1 WebSocket with a reader goroutine.
type wsPeer struct {
	ws   *websocket.Conn
	msgs chan map[string]any
	done chan struct{}
	mu   sync.Mutex // serialises writes from pion callbacks
}

func joinRoom(t *testing.T, httpPort int, link string) *wsPeer {
	t.Helper()
	u, token, ok := strings.Cut(link, "#t=")
	if !ok {
		t.Fatalf("link without a token: %q", link)
	}
	room := u[strings.LastIndex(u, "/")+1:]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/v1/rooms/%s/ws", httpPort, room),
		&websocket.DialOptions{Subprotocols: []string{signaling.Protocol, "token." + token}})
	if err != nil {
		t.Fatal(err)
	}
	p := &wsPeer{ws: ws, msgs: make(chan map[string]any, 256), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			p.msgs <- m
		}
	}()
	t.Cleanup(func() { _ = ws.Close(websocket.StatusNormalClosure, ""); <-p.done })
	return p
}

func (p *wsPeer) send(t *testing.T, m map[string]any) {
	data, _ := json.Marshal(m)
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.ws.Write(context.Background(), websocket.MessageText, data) // a failure shows as a missing reply
}

func (p *wsPeer) expect(t *testing.T, typ string) map[string]any {
	t.Helper()
	select {
	case m := <-p.msgs:
		if m["type"] != typ {
			t.Fatalf("got %v, want %s", m, typ)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", typ)
	}
	return nil
}

// iceConfig turns the iceServers of welcome/admitted into a relay-only configuration.
func iceConfig(t *testing.T, m map[string]any) webrtc.Configuration {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"iceServers": m["iceServers"], "iceTransportPolicy": "relay"})
	var cfg webrtc.Configuration
	if err := json.Unmarshal(data, &cfg); err != nil || len(cfg.ICEServers) == 0 {
		t.Fatalf("iceServers %v: %v", m["iceServers"], err)
	}
	return cfg
}

// The "done when": a room is created, the guest waits and is admitted, two
// pion/webrtc peers exchange offer, answer and trickled candidates over ferry.v1 and relay
// data through Ferry with the welcome's credentials, relay-only; nothing of it reaches the
// log or the metrics.
func TestRoomCallThroughFerry(t *testing.T) {
	key, sum, err := signaling.NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	p := startFerry(t, fmt.Sprintf(`
server:
  public_host: 127.0.0.1
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
relay:
  bind_ip: 127.0.0.1
http:
  listen: "127.0.0.1:0"
  public_url: "https://consult.clinic.example"
admin:
  listen: "127.0.0.1:0"
log:
  level: debug
api:
  keys: [{name: e2e, sha256: %s}]
`, hex.EncodeToString(sum[:])))
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/v1/rooms", p.httpPort),
		strings.NewReader(`{"ttl": 600, "hostName": "Dr. Sonnenschein"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var room signaling.RoomLinks
	if err := json.NewDecoder(resp.Body).Decode(&room); err != nil || resp.StatusCode != 201 {
		t.Fatalf("POST /v1/rooms: %s %v", resp.Status, err)
	}
	resp.Body.Close()

	host := joinRoom(t, p.httpPort, room.Links.Host)
	hw := host.expect(t, "welcome")
	guest := joinRoom(t, p.httpPort, room.Links.Guest)
	gw := guest.expect(t, "welcome")
	if gw["state"] != "waiting" || hw["role"] != "host" {
		t.Fatalf("welcome: host %v guest %v", hw, gw)
	}
	guest.send(t, map[string]any{"type": "name", "name": "Frau Regenbogen"})
	host.expect(t, "knock")
	knock := host.expect(t, "knock") // again, with the name
	if knock["name"] != "Frau Regenbogen" {
		t.Fatalf("knock %v", knock)
	}
	host.send(t, map[string]any{"type": "admit", "id": gw["you"]})
	adm := guest.expect(t, "admitted")
	host.expect(t, "peer-joined")

	hid, gid := hw["you"].(string), gw["you"].(string)
	hostPC := newRelayPC(t, iceConfig(t, hw), host, gid)
	guestPC := newRelayPC(t, iceConfig(t, adm), guest, hid)
	got := make(chan string, 1)
	guestPC.OnDataChannel(func(d *webrtc.DataChannel) {
		d.OnMessage(func(m webrtc.DataChannelMessage) { got <- string(m.Data) })
	})
	offer := offerDataChannel(t, host, hostPC, gid, "hello through Ferry")
	ufrag := ""
	for _, line := range strings.Split(offer.SDP, "\r\n") {
		if v, ok := strings.CutPrefix(line, "a=ice-ufrag:"); ok {
			ufrag = v
		}
	}
	go pumpSignals(t, guest, guestPC)
	go pumpSignals(t, host, hostPC)
	expectRelayedCall(t, got, "hello through Ferry", hostPC, guestPC)
	host.send(t, map[string]any{"type": "end"})

	scrape, _ := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.adminPort))
	if !strings.Contains(scrape, `ferry_room_messages_relayed_total{type="offer"} 1`) {
		t.Fatalf("the call is not counted:\n%s", scrape)
	}
	time.Sleep(200 * time.Millisecond)
	log := p.log.String()
	_, hostToken, _ := strings.Cut(room.Links.Host, "#t=")
	for what, out := range map[string]string{"log": log, "metrics": scrape} {
		for _, secret := range []string{room.Room, hid, gid, "Sonnenschein", "Regenbogen", hostToken[:30], "ufrag:" + ufrag, "typ relay"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s contains %q", what, secret)
			}
		}
	}
}

// pumpSignals feeds pc what arrives for it over the room: it answers an offer, takes an
// answer and trickled candidates, until the connection ends.
func pumpSignals(t *testing.T, w *wsPeer, pc *webrtc.PeerConnection) {
	for {
		select {
		case m := <-w.msgs:
			switch m["type"] {
			case "offer":
				_ = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m["sdp"].(string)})
				a, _ := pc.CreateAnswer(nil)
				_ = pc.SetLocalDescription(a)
				w.send(t, map[string]any{"type": "answer", "to": m["from"], "sdp": a.SDP})
			case "answer":
				_ = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m["sdp"].(string)})
			case "candidate":
				if c, ok := m["candidate"].(map[string]any); ok {
					data, _ := json.Marshal(c)
					var init webrtc.ICECandidateInit
					_ = json.Unmarshal(data, &init)
					_ = pc.AddICECandidate(init)
				}
			}
		case <-w.done:
			return
		}
	}
}

// newRelayPC is a pion peer that trickles its candidates to peer over the room.
func newRelayPC(t *testing.T, cfg webrtc.Configuration, w *wsPeer, peer string) *webrtc.PeerConnection {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			w.send(t, map[string]any{"type": "candidate", "to": peer, "candidate": nil})
			return
		}
		w.send(t, map[string]any{"type": "candidate", "to": peer, "candidate": c.ToJSON()})
	})
	return pc
}

func httpGet(t *testing.T, u string) (string, int) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// expectRelayedCall waits for want on the guest's data channel (got) and checks that both
// sides' selected candidate pairs are relay to relay.
func expectRelayedCall(t *testing.T, got <-chan string, want string, hostPC, guestPC *webrtc.PeerConnection) {
	t.Helper()
	select {
	case msg := <-got:
		if msg != want {
			t.Fatalf("data channel: %q, want %q", msg, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no data through the relay (host %s, guest %s)", hostPC.ConnectionState(), guestPC.ConnectionState())
	}
	for name, pc := range map[string]*webrtc.PeerConnection{"host": hostPC, "guest": guestPC} {
		pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("%s: selected pair %v (%v), want relay -> relay", name, pair, err)
		}
	}
}

// offerDataChannel opens a data channel on hostPC that sends text once open, and sends the
// offer through the room to participant to; it returns the offer.
func offerDataChannel(t *testing.T, host *wsPeer, hostPC *webrtc.PeerConnection, to, text string) webrtc.SessionDescription {
	t.Helper()
	dc, err := hostPC.CreateDataChannel("chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	dc.OnOpen(func() { _ = dc.SendText(text) })
	offer, err := hostPC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := hostPC.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	host.send(t, map[string]any{"type": "offer", "to": to, "sdp": offer.SDP})
	return offer
}
