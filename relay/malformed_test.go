package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

// stunHeader returns a STUN header with the given type and length and a fixed transaction ID.
func stunHeader(typ, length uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, typ)
	binary.BigEndian.PutUint16(b[2:], length)
	binary.BigEndian.PutUint32(b[4:], wire.Magic)
	copy(b[8:], "c10-txid-123")
	return b
}

func withAttrs(typ uint16, attrs ...[]byte) []byte {
	body := bytes.Join(attrs, nil)
	return append(stunHeader(typ, uint16(len(body))), body...)
}

func rawAttr(t uint16, v []byte) []byte {
	b := make([]byte, 4, 4+wire.Pad4(len(v)))
	binary.BigEndian.PutUint16(b, t)
	binary.BigEndian.PutUint16(b[2:], uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

type probe struct {
	name   string
	msg    []byte
	silent bool // must get no response; otherwise any well-formed answer is fine
}

// malformedMessages are the C10 probes.
func malformedMessages() []probe {
	zeroAttrs := make([][]byte, 1000)
	for i := range zeroAttrs {
		zeroAttrs[i] = rawAttr(0x8001, nil)
	}
	m := &stun.Message{Raw: withAttrs(0x0001)}
	_ = m.Decode()
	_ = stun.Fingerprint.AddTo(m)
	m.Raw[len(m.Raw)-1] ^= 1
	misaligned := append(stunHeader(0x0001, 16), 0x00, 0x06, 0x00, 0x05, 'a', 'b', 'c', 'd', 'e',
		0x00, 0x19, 0x00, 0x04, 17, 0, 0)
	return []probe{
		{"length 0xFFFC, empty body", stunHeader(0x0001, 0xFFFC), true},
		{"length not a multiple of 4", append(stunHeader(0x0001, 5), 1, 2, 3, 4, 5), true},
		{"attribute length 0xFFFF", append(stunHeader(0x0001, 8), 0x00, 0x06, 0xFF, 0xFF, 1, 2, 3, 4), true},
		{"top bits set", append([]byte{0xC0, 0x01}, stunHeader(0x0001, 0)[2:]...), true},
		{"wrong magic cookie", append(stunHeader(0x0001, 0)[:4], 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), true},
		{"bad FINGERPRINT", m.Raw, true},
		{"binding response from a client", withAttrs(0x0101), true},
		{"binding indication", withAttrs(0x0011), true},
		{"odd USERNAME, misaligned next", misaligned, false},
		{"1000 zero-length attributes", withAttrs(0x0001, zeroAttrs...), false},
	}
}

// C10: malformed STUN is discarded silently on every transport, the server keeps relaying a
// parallel call without loss, unknown comprehension-required attributes get 420, unknown
// comprehension-optional ones are ignored, and over-long text attributes get 400.
func TestC10MalformedSTUN(t *testing.T) {
	env := newTestEnv(t)
	echo := newUDPEcho(t, "127.0.0.2")

	// A call that keeps relaying while the probes run.
	call, _ := env.allocated(t, "udp", "u-call")
	if code, _ := call.do(stun.MethodChannelBind, chanNum(0x4000), peerAttr{ap: echo.addr()}); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sent, got int
	wg.Go(func() {
		buf := make([]byte, 1500)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			call.send(call.channelData(0x4000, []byte("call "+strconv.Itoa(i))))
			sent++
			_ = call.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := call.conn.Read(buf); err == nil && n > 4 {
				got++
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	for _, network := range transports {
		for _, p := range malformedMessages() {
			c := env.dial(t, network)
			c.send(p.msg)
			b, err := c.recv(150 * time.Millisecond)
			switch {
			case p.silent && err == nil:
				t.Errorf("%s over %s: got a response %x", p.name, network, b)
			case !p.silent && err == nil && !stun.IsMessage(b):
				t.Errorf("%s over %s: answer is not STUN: %x", p.name, network, b)
			}
		}
	}
	// pion's own fuzz corpora, replayed as datagrams.
	u := env.dial(t, "udp")
	for _, b := range fuzzCorpus(t) {
		u.send(b)
	}

	// Unknown comprehension-required attributes: 420 with UNKNOWN-ATTRIBUTES (RFC 8489
	// §6.3.1); ACCESS-TOKEN (RFC 7635) is not implemented, so it is one of them.
	for _, network := range transports {
		c, _ := env.allocated(t, network, "u-c10")
		for _, attr := range []stun.RawAttribute{
			{Type: 0x001B, Value: []byte{0xFF, 0xFF, 1, 2, 3}}, // ACCESS-TOKEN, nonce length 0xFFFF
			{Type: 0x7F00, Value: []byte{1, 2, 3, 4}},
		} {
			code, r := c.do(stun.MethodRefresh, attr)
			if code != 420 {
				t.Errorf("%s: Refresh with %#x: %d, want 420", network, uint16(attr.Type), code)
				continue
			}
			var ua stun.UnknownAttributes
			if err := ua.GetFrom(r); err != nil || len(ua) != 1 || ua[0] != attr.Type {
				t.Errorf("%s: UNKNOWN-ATTRIBUTES %v %v", network, ua, err)
			}
		}
		// ORIGIN is comprehension-optional: ignored (as older Chrome sent it).
		if code, _ := c.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrOrigin, Value: []byte("https://clinic.test")}); code != 0 {
			t.Errorf("%s: Refresh with ORIGIN: %d, want success", network, code)
		}
		// Binding with an unknown comprehension-required attribute: 420 too.
		r, err := c.transact(func() *stun.Message {
			m := c.build(stun.MethodBinding)
			return mustBuild(t, stun.NewTransactionIDSetter(m.TransactionID), stun.BindingRequest,
				stun.RawAttribute{Type: 0x7F01, Value: []byte{1}})
		}())
		if err != nil || errCode(r) != 420 {
			t.Errorf("%s: Binding with 0x7F01: %v %v", network, r, err)
		}
	}

	// USERNAME, REALM and NONCE at RFC 8489's maximum (508 bytes; 127 characters) are
	// processed; one over gets 400.
	for _, network := range transports {
		c := env.dial(t, network)
		for _, tc := range []struct {
			name  string
			attrs []stun.Setter
			want  []int
		}{
			// At the limit the request is processed: the forged nonce gets 438.
			{"username 508", []stun.Setter{raw(stun.AttrUsername, 508), stun.NewRealm(testRealm), stun.NewNonce("n")}, []int{401, 438}},
			{"username 509", []stun.Setter{raw(stun.AttrUsername, 509), stun.NewRealm(testRealm), stun.NewNonce("n")}, []int{400}},
			{"realm 127", []stun.Setter{stun.NewUsername("u"), raw(stun.AttrRealm, 127), stun.NewNonce("n")}, []int{401, 438}},
			{"realm 128", []stun.Setter{stun.NewUsername("u"), raw(stun.AttrRealm, 128), stun.NewNonce("n")}, []int{400}},
			{"nonce 127", []stun.Setter{stun.NewUsername("u"), stun.NewRealm(testRealm), raw(stun.AttrNonce, 127)}, []int{401, 438}},
			{"nonce 128", []stun.Setter{stun.NewUsername("u"), stun.NewRealm(testRealm), raw(stun.AttrNonce, 128)}, []int{400}},
			{"nonce 127 in 381 bytes", []stun.Setter{stun.NewUsername("u"), stun.NewRealm(testRealm), stun.RawAttribute{Type: stun.AttrNonce, Value: []byte(strings.Repeat("€", 127))}}, []int{401, 438}},
		} {
			setters := append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport}, tc.attrs...)
			setters = append(setters, stun.MessageIntegrity([]byte("0123456789abcdef")))
			r, err := c.transact(mustBuild(t, setters...))
			code := -1
			if err == nil {
				code = errCode(r)
			}
			if !slices.Contains(tc.want, code) {
				t.Errorf("%s over %s: %d (%v), want %v", tc.name, network, code, err, tc.want)
			}
		}
	}

	// Authenticated requests with an attribute of the wrong size get 400, not a reading of
	// the attribute as absent: LIFETIME (4 bytes) on Allocate and Refresh, EVEN-PORT (1 byte).
	for _, network := range transports {
		c, _ := env.allocated(t, network, "u-c10-sizes")
		for _, n := range []int{0, 2, 5} {
			if code, _ := c.do(stun.MethodRefresh, raw(stun.AttrLifetime, n)); code != 400 {
				t.Errorf("%s: Refresh with a %d-byte LIFETIME: %d, want 400", network, n, code)
			}
		}
		fresh := env.dial(t, network)
		cred := env.cred(t, "u-c10-sizes", time.Hour)
		for _, a := range []stun.RawAttribute{raw(stun.AttrLifetime, 3), raw(stun.AttrEvenPort, 5), raw(stun.AttrEvenPort, 0)} {
			if code, _ := fresh.allocate(cred.Username, cred.Password, a); code != 400 {
				t.Errorf("%s: Allocate with a %d-byte %s: %d, want 400", network, len(a.Value), a.Type, code)
			}
		}
		for _, v := range [][]byte{{}, {1, 0}, {3, 0, 0, 0}} {
			if code, _ := c.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: v}); code != 400 {
				t.Errorf("%s: Refresh with REQUESTED-ADDRESS-FAMILY %x: %d, want 400", network, v, code)
			}
		}
		tokenAndFamily := []stun.Setter{stun.RawAttribute{Type: stun.AttrReservationToken, Value: make([]byte, 8)},
			stun.RawAttribute{Type: 0x8000, Value: []byte{2, 0, 0, 0}}} // ADDITIONAL-ADDRESS-FAMILY
		if code, _ := fresh.allocate(cred.Username, cred.Password, tokenAndFamily...); code != 400 {
			t.Errorf("%s: Allocate with RESERVATION-TOKEN and ADDITIONAL-ADDRESS-FAMILY: %d, want 400", network, code)
		}
		if code, _ := c.do(stun.MethodRefresh, lifetime(600)); code != 0 {
			t.Errorf("%s: the allocation did not survive the malformed Refreshes: %d", network, code)
		}
	}

	close(stop)
	wg.Wait()
	if sent == 0 || got != sent {
		t.Fatalf("the parallel call lost packets: sent %d, echoed %d", sent, got)
	}
}

func raw(t stun.AttrType, n int) stun.RawAttribute {
	return stun.RawAttribute{Type: t, Value: bytes.Repeat([]byte{'x'}, n)}
}

func mustBuild(t *testing.T, setters ...stun.Setter) *stun.Message {
	t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// fuzzCorpus loads pion/stun's FuzzMessage and pion/turn's FuzzChannelData seed corpora from
// the module cache, plus the recorded browser Allocate requests.
func fuzzCorpus(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, src := range []struct{ mod, dir string }{
		{"github.com/pion/stun/v4", "testdata/fuzz/FuzzMessage"},
		{"github.com/pion/turn/v5", "internal/proto/testdata/fuzz/FuzzChannelData"},
	} {
		dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", src.mod).Output()
		if err != nil {
			t.Fatalf("locate %s: %v", src.mod, err)
		}
		files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(dir)), src.dir, "*"))
		if len(files) == 0 {
			t.Fatalf("no corpus in %s", src.dir)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				if q, ok := strings.CutPrefix(line, "[]byte("); ok {
					if s, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil {
						out = append(out, []byte(s))
					}
				}
			}
		}
	}
	for _, h := range []string{
		"000300242112a442626b4a6849664c3630526863802f0016687474703a2f2f6c6f63616c686f73743a333030302f00000019000411000000",
	} {
		b, _ := hex.DecodeString(h)
		out = append(out, b)
	}
	return out
}
