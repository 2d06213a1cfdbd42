package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// The firewall test runs pion/webrtc peers inside its network namespaces as separate
// processes: this test binary again, with FERRY_FW_HELPER naming the role. They talk to
// the test over stdin and stdout, one line per message, each output line starting with
// helperMark.
const helperMark = "FWH "

// Helper roles.
const (
	helperFetch  = "fetch"  // GET an ICE-servers URL as an app's backend, print the JSON
	helperOffer  = "offer"  // the calling peer (the patient behind the clinic's firewall)
	helperAnswer = "answer" // the peer on the far side
)

// Numbers of a helper call: RTP packets each way and data-channel messages.
const (
	helperRTPPackets = 300
	helperDCMessages = 100
)

// candidateInfo describes one end of the selected candidate pair.
type candidateInfo struct {
	Type          string `json:"type"` // host, srflx, prflx, relay
	Protocol      string `json:"protocol"`
	RelayProtocol string `json:"relayProtocol"` // udp, tcp or tls: how this side reached its TURN server
	Address       string `json:"address"`
	Port          int    `json:"port"`
}

// helperResult is what a peer helper reports after its call.
type helperResult struct {
	Connected   bool          `json:"connected"`
	ConnectMs   int64         `json:"connectMs"` // from setLocalDescription to connected
	Local       candidateInfo `json:"local"`
	Remote      candidateInfo `json:"remote"`
	RTPReceived int64         `json:"rtpReceived"`
	DCReceived  int64         `json:"dcReceived"`
	Error       string        `json:"error,omitempty"`
}

// TestFirewallHelper is not a test: it is the body of a helper process (see helperMark),
// and skips unless FERRY_FW_HELPER names a role.
func TestFirewallHelper(t *testing.T) {
	role := os.Getenv("FERRY_FW_HELPER")
	if role == "" {
		t.Skip("the firewall test's helper process (runs only inside its network namespaces)")
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(kind string, v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "%s%s %s\n", helperMark, kind, b)
		out.Flush()
	}
	var err error
	switch role {
	case helperFetch:
		var doc json.RawMessage
		if doc, err = helperFetchICE(); err == nil {
			say("iceservers", doc)
		}
	case helperOffer, helperAnswer:
		eof := make(chan struct{})
		res, err := helperCall(role == helperOffer, os.Stdin, eof, say)
		if err != nil {
			res.Error = err.Error()
		}
		say("result", res)
		<-eof // keep the call up until the test has both results
		return
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		say("error", err.Error())
	}
}

// helperFetchICE does what a web app's backend does: GET /v1/ice-servers with its API key.
func helperFetchICE() (json.RawMessage, error) {
	pem, err := os.ReadFile(os.Getenv("FERRY_FW_CA"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	req, _ := http.NewRequest(http.MethodGet, os.Getenv("FERRY_FW_URL"), nil)
	req.Header.Set("Authorization", "Bearer "+os.Getenv("FERRY_FW_KEY"))
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ice-servers: %s: %s", resp.Status, body)
	}
	return bytes.TrimSpace(body), nil
}

// helperCall runs one side of a call: the ICE servers from FERRY_FW_CONFIG, SDP and
// candidates trickled over stdin and stdout (as browsers do: gathering over a blocked
// transport may take half a minute to give up), then RTP both ways and data-channel
// messages from the offerer; it reports the selected pair and what arrived. eof closes when
// stdin ends.
func helperCall(offerer bool, stdin io.Reader, eof chan struct{}, say func(string, any)) (helperResult, error) {
	var res helperResult
	var cfg webrtc.Configuration
	if err := json.Unmarshal([]byte(os.Getenv("FERRY_FW_CONFIG")), &cfg); err != nil {
		close(eof)
		return res, fmt.Errorf("FERRY_FW_CONFIG: %w", err)
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		close(eof)
		return res, err
	}
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(cfg)
	if err != nil {
		close(eof)
		return res, err
	}
	// No pc.Close: behind the firewall, gathering over TCP 3478 waits on a connect the
	// firewall swallows (about two minutes), and Close waits for gathering. The process ends
	// after the call; the kernel closes its sockets.
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "ferry-fw")
	if err != nil {
		close(eof)
		return res, err
	}
	if _, err := pc.AddTrack(track); err != nil {
		close(eof)
		return res, err
	}
	var rtpGot, dcGot atomic.Int64
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			rtpGot.Add(1)
		}
	})
	var dc *webrtc.DataChannel
	if offerer {
		if dc, err = pc.CreateDataChannel("chat", nil); err != nil {
			close(eof)
			return res, err
		}
	} else {
		pc.OnDataChannel(func(d *webrtc.DataChannel) {
			d.OnMessage(func(webrtc.DataChannelMessage) { dcGot.Add(1) })
		})
	}
	connected := make(chan struct{})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			select {
			case <-connected:
			default:
				close(connected)
			}
		}
	})
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			say("candidate", c.ToJSON())
		}
	})
	sig := &helperSignal{pc: pc, say: say, started: make(chan time.Time, 1)}
	go func() {
		defer close(eof)
		sig.read(stdin)
	}()
	if offerer {
		if err := sig.offer(); err != nil {
			return res, err
		}
	}
	var start time.Time
	select {
	case start = <-sig.started:
	case <-time.After(30 * time.Second):
		return res, errors.New("no offer within 30 s")
	}
	select {
	case <-connected:
		res.Connected, res.ConnectMs = true, time.Since(start).Milliseconds()
	case <-time.After(30 * time.Second):
		return res, fmt.Errorf("not connected within 30 s (signaling: %v)", sig.error())
	}
	res.Local, res.Remote = selectedPair(pc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if dc != nil {
		go func() {
			for dc.ReadyState() != webrtc.DataChannelStateOpen && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			msg := bytes.Repeat([]byte("m"), 1000)
			for range helperDCMessages {
				_ = dc.Send(msg)
			}
		}()
	}
	payload := bytes.Repeat([]byte{0xAB}, 1000)
	for i := range helperRTPPackets {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i),
			Timestamp: uint32(i) * 3000, SSRC: 0x4242}, Payload: payload}
		if err := track.WriteRTP(pkt); err != nil {
			return res, err
		}
		time.Sleep(2 * time.Millisecond)
	}
	for ctx.Err() == nil && (rtpGot.Load() < helperRTPPackets || !offerer && dcGot.Load() < helperDCMessages) {
		time.Sleep(50 * time.Millisecond)
	}
	res.RTPReceived, res.DCReceived = rtpGot.Load(), dcGot.Load()
	return res, nil
}

// helperSignal is a helper's side of the signaling: offer, answer and trickled candidates,
// with candidates held until the remote description is set.
type helperSignal struct {
	pc      *webrtc.PeerConnection
	say     func(string, any)
	started chan time.Time // when the local description was set
	mu      sync.Mutex
	remote  bool
	pending []webrtc.ICECandidateInit
	err     error
}

func (s *helperSignal) error() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *helperSignal) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// offer sets and sends the local offer.
func (s *helperSignal) offer() error {
	sd, err := s.pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	s.started <- time.Now()
	if err := s.pc.SetLocalDescription(sd); err != nil {
		return err
	}
	s.say("offer", s.pc.LocalDescription())
	return nil
}

// read handles the lines from the test until stdin ends.
func (s *helperSignal) read(stdin io.Reader) {
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		kind, payload, _ := strings.Cut(in.Text(), " ")
		switch kind {
		case "offer", "answer":
			var sd webrtc.SessionDescription
			if err := json.Unmarshal([]byte(payload), &sd); err != nil {
				s.fail(err)
				continue
			}
			if err := s.setRemote(sd); err != nil {
				s.fail(err)
				continue
			}
			if kind == "offer" {
				answer, err := s.pc.CreateAnswer(nil)
				if err != nil {
					s.fail(err)
					continue
				}
				s.started <- time.Now()
				if err := s.pc.SetLocalDescription(answer); err != nil {
					s.fail(err)
					continue
				}
				s.say("answer", s.pc.LocalDescription())
			}
		case "candidate":
			var c webrtc.ICECandidateInit
			if err := json.Unmarshal([]byte(payload), &c); err != nil {
				s.fail(err)
				continue
			}
			s.mu.Lock()
			if !s.remote {
				s.pending = append(s.pending, c)
				s.mu.Unlock()
				continue
			}
			s.mu.Unlock()
			if err := s.pc.AddICECandidate(c); err != nil {
				s.fail(err)
			}
		}
	}
}

// setRemote sets the remote description and adds the candidates that came before it.
func (s *helperSignal) setRemote(sd webrtc.SessionDescription) error {
	if err := s.pc.SetRemoteDescription(sd); err != nil {
		return err
	}
	s.mu.Lock()
	s.remote = true
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, c := range pending {
		if err := s.pc.AddICECandidate(c); err != nil {
			return err
		}
	}
	return nil
}

// selectedPair describes the selected candidate pair, with the local candidate's relay
// protocol from getStats.
func selectedPair(pc *webrtc.PeerConnection) (local, remote candidateInfo) {
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return local, remote
	}
	info := func(c *webrtc.ICECandidate) candidateInfo {
		return candidateInfo{Type: c.Typ.String(), Protocol: c.Protocol.String(), Address: c.Address, Port: int(c.Port)}
	}
	local, remote = info(pair.Local), info(pair.Remote)
	for _, s := range pc.GetStats() {
		if cs, ok := s.(webrtc.ICECandidateStats); ok && cs.Type == webrtc.StatsTypeLocalCandidate &&
			cs.IP == local.Address && int(cs.Port) == local.Port && cs.CandidateType.String() == local.Type {
			local.RelayProtocol = cs.RelayProtocol
		}
	}
	return local, remote
}
