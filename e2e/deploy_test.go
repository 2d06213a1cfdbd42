package e2e

import (
	"bytes"
	"debug/elf"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8syaml "sigs.k8s.io/yaml"
)

// defaultDrain is server.drain_timeout's default, which the deploy files' stop timeouts cover.
const defaultDrain = 30 * time.Minute

// The systemd unit passes systemd-analyze verify without a word, reloads with SIGHUP and
// gives the drain its time.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	unit, err := os.ReadFile("../deploy/systemd/ferry.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the binary of ExecStart to exist: point it at the one the tests built.
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.service")
	os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/ferry"), []byte(ferryBinary(t))), 0o644)
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"DynamicUser=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "ProtectSystem=strict",
		"StateDirectory=ferry", "ExecReload=/bin/kill -HUP $MAINPID", "UMask=0077", "LimitNOFILE="} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)min$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("no TimeoutStopSec in minutes")
	}
	if mins, _ := strconv.Atoi(string(m[1])); time.Duration(mins)*time.Minute <= defaultDrain {
		t.Fatalf("TimeoutStopSec=%smin does not cover server.drain_timeout (%s)", m[1], defaultDrain)
	}
	if m := regexp.MustCompile(`(?m)^LimitNOFILE=(\d+)$`).FindSubmatch(unit); m == nil {
		t.Fatal("LimitNOFILE")
	} else if n, _ := strconv.Atoi(string(m[1])); n < 65535-49152+1+16384 {
		t.Fatalf("LimitNOFILE=%d is less than the relay ports and connections of the defaults", n)
	}
}

// The container image: built with docker where an engine runs (ferry version inside it);
// here and everywhere, the binary built as the Dockerfile builds it is static (it runs on
// distroless/static) and runs.
func TestContainerImage(t *testing.T) {
	df, err := os.ReadFile("../deploy/docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(df, []byte(`CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ferry ./cmd/ferry`)) {
		t.Fatal("the Dockerfile's build line changed: update this test")
	}
	bin := filepath.Join(t.TempDir(), "ferry")
	args := []string{"build", "-trimpath", "-ldflags=-s -w"}
	cmd := exec.Command("go", append(args, "-o", bin, "../cmd/ferry")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the image's binary is dynamically linked: distroless/static cannot run it")
		}
	}
	f.Close()
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "ferry ") {
		t.Fatalf("ferry version: %v %s", err, out)
	}
	for _, want := range []string{"USER 65532", "STOPSIGNAL SIGTERM", "FROM gcr.io/distroless/static"} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("the Dockerfile lacks %s", want)
		}
	}

	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("docker is not installed: the image build was not tried (the static binary was)")
	}
	if out, err := exec.Command(docker, "info").CombinedOutput(); err != nil {
		t.Skipf("docker cannot build here (no engine: %s); the static binary was tried", lastLine(out))
	}
	tag := "ferry-e2e:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	build := exec.Command(docker, "build", "-f", "deploy/docker/Dockerfile", "-t", tag, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	defer exec.Command(docker, "rmi", "-f", tag).Run()
	out, err := exec.Command(docker, "run", "--rm", tag, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ferry ") {
		t.Fatalf("ferry version in the image: %v %s", err, out)
	}
}

// lastLine is the last line of a command's output: docker info ends with why it failed.
func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// compose.yaml runs the image on the host's network with the drain's stop time, Ferry's
// configuration and a volume for the data directory.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../deploy/docker/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			NetworkMode     string   `yaml:"network_mode"`
			StopGracePeriod string   `yaml:"stop_grace_period"`
			StopSignal      string   `yaml:"stop_signal"`
			ReadOnly        bool     `yaml:"read_only"`
			CapDrop         []string `yaml:"cap_drop"`
			CapAdd          []string `yaml:"cap_add"`
			Image, Restart  string
			Ulimits         map[string]int
			Volumes         []string
			Build           struct{ Context, Dockerfile string }
		}
		Volumes map[string]any
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	s, ok := c.Services["ferry"]
	if !ok {
		t.Fatal("no ferry service")
	}
	grace, err := time.ParseDuration(s.StopGracePeriod)
	if s.NetworkMode != "host" || err != nil || grace <= defaultDrain || s.StopSignal != "SIGTERM" || !s.ReadOnly ||
		strings.Join(s.CapAdd, ",") != "NET_BIND_SERVICE" || s.Ulimits["nofile"] < 65536 {
		t.Fatalf("service: %+v", s)
	}
	if _, err := os.Stat(filepath.Join("../deploy/docker", s.Build.Context, s.Build.Dockerfile)); err != nil {
		t.Fatalf("build: %v", err)
	}
	vols := strings.Join(s.Volumes, " ")
	for _, want := range []string{":/etc/ferry/ferry.yaml:ro", "ferry-data:/var/lib/ferry"} {
		if !strings.Contains(vols, want) {
			t.Errorf("volumes lack %s", want)
		}
	}
}

// The Kubernetes manifests decode strictly into the Kubernetes API types (an unknown field
// or a wrong type fails), build with kustomize where kubectl is installed, run on the host
// network with readiness on /readyz, a preStop drain and a grace period that covers it, and
// the ConfigMap's configuration passes ferry config validate with the Secret's files.
func TestKubernetesManifests(t *testing.T) {
	dir := "../deploy/kubernetes"
	var ds appsv1.DaemonSet
	var cm corev1.ConfigMap
	var sec corev1.Secret
	var svc corev1.Service
	var ns corev1.Namespace
	for file, obj := range map[string]any{"daemonset.yaml": &ds, "configmap.yaml": &cm, "secret.yaml": &sec,
		"service.yaml": &svc, "namespace.yaml": &ns} {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := k8syaml.UnmarshalStrict(data, obj); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, k := range []struct{ got, want string }{{ds.Kind, "DaemonSet"}, {ds.APIVersion, "apps/v1"}, {cm.Kind, "ConfigMap"},
		{sec.Kind, "Secret"}, {svc.Kind, "Service"}, {ns.Kind, "Namespace"}} {
		if k.got != k.want {
			t.Errorf("kind/apiVersion %q, want %q", k.got, k.want)
		}
	}
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		if out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput(); err != nil {
			t.Errorf("kubectl kustomize: %v\n%s", err, out)
		}
	}

	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || len(pod.Containers) != 1 {
		t.Fatalf("pod: hostNetwork %v, %d containers", pod.HostNetwork, len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("readiness must probe /readyz")
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil ||
		!strings.Contains(strings.Join(c.Lifecycle.PreStop.Exec.Command, " "), "drain --wait") {
		t.Error("preStop must run ferry drain --wait")
	}
	var f struct {
		Server struct {
			DrainTimeout string `yaml:"drain_timeout"`
		}
	}
	config := cm.Data["ferry.yaml"]
	if err := yaml.Unmarshal([]byte(config), &f); err != nil {
		t.Fatal(err)
	}
	drain, err := time.ParseDuration(f.Server.DrainTimeout)
	if err != nil || pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= drain {
		t.Fatalf("terminationGracePeriodSeconds %v does not cover drain_timeout %q", pod.TerminationGracePeriodSeconds, f.Server.DrainTimeout)
	}
	if !strings.Contains(strings.Join(c.Args, " "), "/etc/ferry/config/ferry.yaml") {
		t.Errorf("args %v do not read the ConfigMap's file", c.Args)
	}

	// The configuration with the Secret's files and a certificate where the pod mounts them.
	tmp := t.TempDir()
	for name, v := range sec.StringData {
		os.WriteFile(filepath.Join(tmp, name), []byte(v), 0o600)
	}
	cert, key, _ := writeTestCert(t)
	config = strings.NewReplacer("/etc/ferry/secrets/", tmp+"/", "/etc/ferry/tls/tls.crt", cert,
		"/etc/ferry/tls/tls.key", key, "/var/lib/ferry", filepath.Join(tmp, "data")).Replace(config)
	validate(t, config)
}

// validate runs ferry config validate on the YAML text.
func validate(t *testing.T, config string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, []byte(config), 0o600)
	out, err := exec.Command(ferryBinary(t), "config", "validate", "--config", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("ferry config validate: %v\n%s\n%s", err, out, config)
	}
}

// exampleFiles puts an example configuration's outside files in a temporary directory: the
// secret files, and a certificate for the Let's Encrypt paths. It returns the YAML with the
// paths replaced.
func exampleFiles(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../deploy/examples", name))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	os.WriteFile(filepath.Join(tmp, "turn-secrets"), []byte(opsSecretOld+"\n"), 0o600)
	os.WriteFile(filepath.Join(tmp, "room-keys"), []byte("a-room-signing-key-of-32-bytes-or-more\n"), 0o600)
	cert, key, _ := writeTestCert(t)
	return strings.NewReplacer("/etc/ferry/secrets/", tmp+"/",
		"/etc/letsencrypt/live/turn.clinic.example/fullchain.pem", cert,
		"/etc/letsencrypt/live/turn.clinic.example/privkey.pem", key).Replace(string(data))
}

// Each example configuration validates and serves: its listen and relay addresses moved to
// loopback by environment variables (as an operator would override them), everything else
// as written.
func TestExampleConfigs(t *testing.T) {
	echo := startEcho(t)
	loopback := []string{"FERRY_LOG_FORMAT=text", "FERRY_RELAY_BIND_IP=127.0.0.1", "FERRY_RELAY_ALLOWED_PEERS=127.0.0.2/32", "FERRY_ADMIN_LISTEN=127.0.0.1:0"}

	t.Run("clinic-nat", func(t *testing.T) {
		y := exampleFiles(t, "clinic-nat.yaml")
		validate(t, y)
		shared := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		p := startFerry(t, y, append(loopback, "FERRY_TURN_UDP_LISTEN=127.0.0.1:0", "FERRY_TURN_TCP_LISTEN=127.0.0.1:0,"+shared,
			"FERRY_TURN_TLS_LISTEN="+shared, "FERRY_HTTP_LISTEN="+shared)...)
		user, pass := restCred(opsSecretOld, "alice")
		rc, err := newTurnClientRealm(t, p, user, pass, "clinic.example").Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got := rc.LocalAddr().String(); !strings.HasPrefix(got, "203.0.113.10:") {
			t.Fatalf("relayed address %s: behind 1:1 NAT it must be the advertised 203.0.113.10", got)
		}
		sharedPortServes(t, p)
	})
	t.Run("port-443", func(t *testing.T) {
		y := exampleFiles(t, "port-443.yaml")
		validate(t, y)
		shared := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		p := startFerry(t, y, append(loopback, "FERRY_TURN_UDP_LISTEN=127.0.0.1:0", "FERRY_TURN_TCP_LISTEN="+shared,
			"FERRY_TURN_TLS_LISTEN="+shared, "FERRY_HTTP_LISTEN="+shared)...)
		if p.tcpPort != p.tlsPort || p.tlsPort != p.httpPort {
			t.Fatalf("ports: tcp %d, tls %d, http %d", p.tcpPort, p.tlsPort, p.httpPort)
		}
		sharedPortServes(t, p)
	})
	t.Run("relay-only", func(t *testing.T) {
		y := exampleFiles(t, "relay-only.yaml")
		validate(t, y)
		p := startFerry(t, y, append(loopback, "FERRY_TURN_UDP_LISTEN=127.0.0.1:0", "FERRY_TURN_TCP_LISTEN=127.0.0.1:0")...)
		if p.httpPort != 0 {
			t.Fatal("the relay-only example serves no HTTP API")
		}
		// The backend mints the credential with the shared secret; the relay relays.
		user, pass := restCred(opsSecretOld, "consult-4711")
		rc, err := newTurnClient(t, p, user, pass).Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		s := startStream(rc, echo.LocalAddr(), 5*time.Millisecond)
		time.Sleep(200 * time.Millisecond)
		if sent, echoed := s.finish(t); sent == 0 || echoed != sent {
			t.Fatalf("relayed %d of %d", echoed, sent)
		}
		if code, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", p.adminPort)); code != 200 {
			t.Fatalf("admin /readyz: %d", code)
		}
	})
}

// sharedPortServes checks that one TLS port carries both TURN (a STUN Binding over TLS) and
// the HTTPS API (/healthz).
func sharedPortServes(t *testing.T, p *ferryProc) {
	t.Helper()
	conn, err := tlsDial(p.tlsPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := stunBinding(conn); err != nil {
		t.Fatalf("TURN over TLS on the shared port: %v", err)
	}
	tr := &http.Transport{TLSClientConfig: insecureTLS()}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", p.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTPS /healthz on the shared port: %d", resp.StatusCode)
	}
	if p.tcpPort != p.tlsPort {
		return
	}
	plain, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", p.tcpPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := stunBinding(plain); err != nil {
		t.Fatalf("plain TURN over TCP on the shared port: %v", err)
	}
}

// The README's complete example configuration is deploy/examples/clinic-nat.yaml, word for
// word (and that one validates: TestExampleConfigs).
func TestREADMEExampleIsTheExampleFile(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../deploy/examples/clinic-nat.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte("```yaml\n"+string(example)+"```")) {
		t.Fatal("README's operator guide must carry deploy/examples/clinic-nat.yaml verbatim in a yaml block")
	}
}
