package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/signaling"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// ferryCmd runs a ferry subcommand against p's data directory.
func ferryCmd(t *testing.T, p *ferryProc, args ...string) string {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), append(args, "--data-dir", p.dataDir)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A real relay session through the real binary: its allocation row carries exactly the bytes
// and packets relayed in each direction, `ferry logs` answers while the server runs, and the
// process log never shows the client's address or the user id.
func TestAllocationLogRealSession(t *testing.T) {
	key, sum, err := signaling.NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	p := startFerry(t, fmt.Sprintf(`
log:
  level: debug
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
relay:
  bind_ip: 127.0.0.1
  allowed_peers: [127.0.0.2/32]
http:
  listen: "127.0.0.1:0"
api:
  keys: [{name: e2e, sha256: %s}]
`, hex.EncodeToString(sum[:])))

	const clientIP, user = "127.0.0.5", "patient-q4x8"
	// The web app's backend fetches credentials from the client's address.
	httpClient := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}).DialContext}}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/ice-servers?user=%s&transports=udp", p.httpPort, user), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("User-Agent", "e2e-browser/1.0")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ice struct {
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"iceServers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ice); err != nil || len(ice.ICEServers) != 2 {
		t.Fatalf("ice servers: %v", err)
	}
	resp.Body.Close()
	cred := ice.ICEServers[1]

	echo := startEcho(t)

	conn, err := net.ListenPacket("udp4", clientIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("127.0.0.1:%d", p.udpPort)
	client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: cred.Username, Password: cred.Credential, Realm: "ferry", LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	var sentBytes, packets int
	buf := make([]byte, 2000)
	for i := range 50 {
		msg := bytes.Repeat([]byte{byte(i)}, 100+i*7) // sizes 100..443
		if _, err := relayConn.WriteTo(msg, echo.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := relayConn.ReadFrom(buf)
		if err != nil || n != len(msg) {
			t.Fatalf("echo %d: %d bytes, %v", i, n, err)
		}
		sentBytes += len(msg)
		packets++
	}
	relayConn.Close() // Refresh with LIFETIME 0
	client.Close()
	conn.Close()

	// The record is complete once the allocation ended; ferry logs reads it while Ferry runs.
	var recs alloclog.Records
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := ferryCmd(t, p, "logs", "query", "--user", user)
		if err := json.Unmarshal([]byte(out), &recs); err != nil {
			t.Fatalf("query output: %v\n%s", err, out)
		}
		if len(recs.Allocations) == 1 && recs.Allocations[0].End != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended allocation record: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a := recs.Allocations[0]
	if a.BytesToPeer != int64(sentBytes) || a.BytesToClient != int64(sentBytes) ||
		a.PacketsToPeer != int64(packets) || a.PacketsToClient != int64(packets) {
		t.Fatalf("traffic in the record %+v, want %d bytes and %d packets each way", a, sentBytes, packets)
	}
	if a.ClientIP != clientIP || a.UserID != user || a.Transport != "udp" || a.EndReason != "deleted_by_client" ||
		len(a.Peers) != 1 || a.Peers[0].IP != "127.0.0.2" {
		t.Fatalf("record %+v", a)
	}
	byIP := ferryCmd(t, p, "logs", "query", "--ip", clientIP, "--format", "csv")
	if !strings.Contains(byIP, "http_request") || !strings.Contains(byIP, "e2e-browser/1.0") || !strings.Contains(byIP, "/v1/ice-servers,200") {
		t.Fatalf("query by IP lacks the signaling request:\n%s", byIP)
	}
	if out := ferryCmd(t, p, "logs", "stats"); !strings.Contains(out, "allocations:   1") {
		t.Fatalf("stats: %s", out)
	}
	if out := ferryCmd(t, p, "logs", "erase", "--ip", clientIP); !strings.Contains(out, "1 allocations") || !strings.Contains(out, "1 HTTP requests") {
		t.Fatalf("erase: %s", out)
	}
	if out := ferryCmd(t, p, "logs", "query", "--user", user); !strings.Contains(out, `"allocations": []`) {
		t.Fatalf("erased record still there: %s", out)
	}

	p.stop(t)
	logText := p.log.String()
	for _, secret := range []string{clientIP, user, cred.Username, cred.Credential, key} {
		if strings.Contains(logText, secret) {
			t.Errorf("the process log contains %q:\n%s", secret, logText)
		}
	}
	if !strings.Contains(logText, "level=DEBUG") && !strings.Contains(logText, "level=INFO") {
		t.Fatalf("no log captured")
	}
}
