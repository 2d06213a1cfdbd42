package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeTestCert writes a self-signed certificate for 127.0.0.1 and returns the PEM paths
// and its NotAfter.
func writeTestCert(t *testing.T) (certFile, keyFile string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	notAfter = time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "turn.ferry.test"},
		DNSNames: []string{"turn.ferry.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile, notAfter
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var metricName = regexp.MustCompile(`\bferry_[a-z0-9_]+`)

// The admin listener serves /metrics, health and readiness; the public HTTP listener serves
// no metrics; pprof is off by default. The alert rules pass promtool (syntax and unit tests),
// and every ferry_ metric the alerts and the Grafana dashboard use exists in a live scrape.
func TestAdminListenerAndDeployFiles(t *testing.T) {
	certFile, keyFile, notAfter := writeTestCert(t)
	p := startFerry(t, fmt.Sprintf(`
turn:
  udp_listen: ["127.0.0.1:0"]
  tcp_listen: ["127.0.0.1:0"]
  tls_listen: ["127.0.0.1:0"]
  tls_cert_file: %s
  tls_key_file: %s
relay:
  bind_ip: 127.0.0.1
  max_allocations: 500
http:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
`, certFile, keyFile))
	admin := fmt.Sprintf("http://127.0.0.1:%d", p.adminPort)
	code, scrape := get(t, admin+"/metrics")
	if code != 200 {
		t.Fatalf("admin /metrics: %d", code)
	}
	for _, want := range []string{
		`ferry_build_info{`,
		`ferry_turn_allocations_active{transport="udp"} 0`,
		`ferry_turn_allocation_limit{kind="total"} 500`,
		`ferry_alloclog_retention_seconds 172800`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	expiry := regexp.MustCompile(`ferry_tls_certificate_expiry_timestamp_seconds\{listener="turn"\} (\S+)`).FindStringSubmatch(scrape)
	if expiry == nil {
		t.Errorf("no certificate expiry for the TURN TLS listener")
	} else if v, _ := strconv.ParseFloat(expiry[1], 64); int64(v) != notAfter.Unix() {
		t.Errorf("certificate expiry %s, want %d", expiry[1], notAfter.Unix())
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/debug/pprof/": 404} {
		if code, _ := get(t, admin+path); code != want {
			t.Errorf("admin %s: %d, want %d", path, code, want)
		}
	}
	if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.httpPort)); code != 404 || strings.Contains(body, "ferry_") {
		t.Fatalf("the public listener serves metrics: %d", code)
	}

	present := map[string]bool{}
	for _, m := range metricName.FindAllString(scrape, -1) {
		present[m] = true
	}
	for _, file := range []string{"../deploy/prometheus/alerts.yml", "../deploy/grafana/ferry-dashboard.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricName.FindAllString(string(data), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			if !present[m] && !present[base+"_bucket"] && !present[base] {
				t.Errorf("%s uses %s, which Ferry does not export", filepath.Base(file), m)
			}
		}
	}

	promtool := needTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
