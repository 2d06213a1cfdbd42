package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/signaling"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// ferryWithAPI starts Ferry with the signaling HTTP listener and one API key.
func ferryWithAPI(t *testing.T) (*ferryProc, string) {
	t.Helper()
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
api:
  keys:
    - name: e2e
      sha256: %s
`, hex.EncodeToString(sum[:])))
	return p, key
}

// fetchICEServers does what a web app's backend does: GET /v1/ice-servers with its API key.
// The JSON goes unchanged into webrtc.Configuration, as a browser would pass it to
// new RTCPeerConnection(...).
func fetchICEServers(t *testing.T, p *ferryProc, key, query string) webrtc.Configuration {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/ice-servers?%s", p.httpPort, query), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("ice-servers: %s", resp.Status)
	}
	var cfg webrtc.Configuration
	if err := json.NewDecoder(resp.Body).Decode(&cfg); err != nil {
		t.Fatalf("ice-servers JSON is not an RTCConfiguration: %v", err)
	}
	return cfg
}

// The main job end to end: two pion/webrtc peers, relay-only, take their ICE servers from
// Ferry's HTTP endpoint, connect through Ferry's relay (over UDP, then over TCP to Ferry),
// and exchange data-channel messages and an RTP track. Both selected candidate pairs must be
// relay-relay, and every byte sent must arrive.
func TestWebRTCCallThroughFerry(t *testing.T) {
	p, key := ferryWithAPI(t)
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			query := "iceTransportPolicy=relay&transports=" + transport
			doctorCfg := fetchICEServers(t, p, key, query+"&user=doctor")
			patientCfg := fetchICEServers(t, p, key, query+"&user=patient")
			if doctorCfg.ICETransportPolicy != webrtc.ICETransportPolicyRelay {
				t.Fatalf("policy not echoed: %v", doctorCfg.ICETransportPolicy)
			}
			runCall(t, doctorCfg, patientCfg)
		})
	}
}

func runCall(t *testing.T, offerCfg, answerCfg webrtc.Configuration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	newPC := func(cfg webrtc.Configuration) *webrtc.PeerConnection {
		m := &webrtc.MediaEngine{}
		if err := m.RegisterDefaultCodecs(); err != nil {
			t.Fatal(err)
		}
		var se webrtc.SettingEngine
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
		api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
		pc, err := api.NewPeerConnection(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		return pc
	}
	offerer, answerer := newPC(offerCfg), newPC(answerCfg)

	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "ferry-e2e")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := offerer.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	dc, err := offerer.CreateDataChannel("chat", nil)
	if err != nil {
		t.Fatal(err)
	}

	const messages, msgSize, rtpPackets, rtpPayload = 200, 1000, 300, 1000
	var dcBytes, rtpBytes, rtpCount atomic.Int64
	dcDone := make(chan struct{})
	answerer.OnDataChannel(func(d *webrtc.DataChannel) {
		var n atomic.Int64
		d.OnMessage(func(msg webrtc.DataChannelMessage) {
			dcBytes.Add(int64(len(msg.Data)))
			if n.Add(1) == messages {
				close(dcDone)
			}
		})
	})
	rtpDone := make(chan struct{})
	answerer.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			rtpBytes.Add(int64(len(pkt.Payload)))
			if rtpCount.Add(1) == rtpPackets {
				close(rtpDone)
				return
			}
		}
	})

	connected := func(pc *webrtc.PeerConnection) chan struct{} {
		ch := make(chan struct{})
		var once sync.Once
		pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
			if s == webrtc.PeerConnectionStateConnected {
				once.Do(func() { close(ch) })
			}
		})
		return ch
	}
	offConn, ansConn := connected(offerer), connected(answerer)

	// Signaling in-process, without trickle: full SDP after gathering.
	offer, err := offerer.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(offerer)
	if err := offerer.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := answerer.SetRemoteDescription(*offerer.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	answer, err := answerer.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(answerer)
	if err := answerer.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := offerer.SetRemoteDescription(*answerer.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan struct{}{offConn, ansConn} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("peers did not connect through Ferry")
		}
	}
	for name, pc := range map[string]*webrtc.PeerConnection{"offerer": offerer, "answerer": answerer} {
		pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("%s: no selected pair: %v", name, err)
		}
		if pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("%s: selected pair %s -> %s, want relay -> relay", name, pair.Local.Typ, pair.Remote.Typ)
		}
	}

	opened := make(chan struct{})
	dc.OnOpen(func() { close(opened) })
	if dc.ReadyState() == webrtc.DataChannelStateOpen {
		close(opened)
	}
	select {
	case <-opened:
	case <-ctx.Done():
		t.Fatal("data channel did not open")
	}
	msg := bytes.Repeat([]byte("m"), msgSize)
	for range messages {
		if err := dc.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	payload := bytes.Repeat([]byte{0xAB}, rtpPayload)
	for i := range rtpPackets {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i),
			Timestamp: uint32(i) * 3000, SSRC: 0x1234}, Payload: payload}
		if err := track.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for name, ch := range map[string]chan struct{}{"data channel": dcDone, "rtp": rtpDone} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: not everything arrived (data %d bytes, rtp %d packets)", name, dcBytes.Load(), rtpCount.Load())
		}
	}
	if got := dcBytes.Load(); got != messages*msgSize {
		t.Fatalf("data channel bytes %d, want %d", got, messages*msgSize)
	}
	if got := rtpBytes.Load(); got != rtpPackets*rtpPayload {
		t.Fatalf("rtp payload bytes %d, want %d", got, rtpPackets*rtpPayload)
	}
}
