package control

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

// TestWriteFuzzCorpus writes the seed corpora of FuzzHandle and FuzzHandleAuthenticated into
// testdata (with FERRY_WRITE_CORPUS=1; the files are committed). The ordinary test run
// replays every seed through the fuzz targets.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("FERRY_WRITE_CORPUS") == "" {
		t.Skip("set FERRY_WRITE_CORPUS=1 to rewrite testdata/fuzz/FuzzHandle")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, raw := range handleSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", raw)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join("testdata", "fuzz", "FuzzHandleAuthenticated")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range authenticatedSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nuint16(%d)\nbool(%v)\n[]byte(%q)\n", s.method, s.allocated, s.attrs)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func header(typ, length uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, typ)
	binary.BigEndian.PutUint16(b[2:], length)
	binary.BigEndian.PutUint32(b[4:], wire.Magic)
	copy(b[8:], "corpus-txid1")
	return b
}

func attr(typ uint16, v []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func message(typ uint16, attrs ...[]byte) []byte {
	body := bytes.Join(attrs, nil)
	return append(header(typ, uint16(len(body))), body...)
}

// handleSeeds are well-formed and malformed messages of every kind the control plane meets.
func handleSeeds(t *testing.T) map[string][]byte {
	build := func(setters ...stun.Setter) []byte {
		m, err := stun.Build(setters...)
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	allocate := stun.NewType(stun.MethodAllocate, stun.ClassRequest)
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	zero := make([][]byte, 1000)
	for i := range zero {
		zero[i] = attr(0x8001, nil)
	}
	return map[string][]byte{
		"binding":                 build(stun.TransactionID, stun.BindingRequest),
		"binding-fingerprint":     build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint),
		"binding-change-request":  message(0x0001, attr(0x0003, []byte{0, 0, 0, 6})),
		"allocate-unauth":         build(stun.TransactionID, allocate, transport),
		"allocate-browser-like":   build(stun.TransactionID, allocate, transport, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0x0e, 0x10}}, stun.Fingerprint),
		"allocate-origin":         build(stun.TransactionID, allocate, transport, stun.RawAttribute{Type: stun.AttrOrigin, Value: []byte("https://consult.example")}),
		"allocate-access-token":   message(0x0003, attr(0x0019, []byte{17, 0, 0, 0}), attr(0x001B, []byte{0xFF, 0xFF, 1, 2})),
		"allocate-unknown-7f00":   message(0x0003, attr(0x0019, []byte{17, 0, 0, 0}), attr(0x7F00, []byte{1})),
		"allocate-dont-fragment":  message(0x0003, attr(0x0019, []byte{17, 0, 0, 0}), attr(0x001A, nil)),
		"allocate-auth-forged":    build(stun.TransactionID, allocate, transport, stun.NewUsername("1800003600:u"), stun.NewRealm("ferry.test"), stun.NewNonce("AAAAAAAAAAAAAAAA"), stun.MessageIntegrity([]byte("0123456789abcdef"))),
		"refresh-no-auth":         message(0x0004, attr(0x000D, []byte{0, 0, 0, 0})),
		"create-permission":       message(0x0008, attr(0x0012, []byte{0, 1, 0x21, 0x42, 0x5E, 0x12, 0xA4, 0x40})),
		"channel-bind":            message(0x0009, attr(0x000C, []byte{0x40, 0, 0, 0}), attr(0x0012, []byte{0, 1, 0x21, 0x42, 0x5E, 0x12, 0xA4, 0x40})),
		"connection-bind":         message(0x000B, attr(0x002A, []byte{0, 0, 0, 1})),
		"username-508":            message(0x0003, attr(0x0006, bytes.Repeat([]byte("u"), 508))),
		"username-509":            message(0x0003, attr(0x0006, bytes.Repeat([]byte("u"), 509))),
		"realm-128-chars":         message(0x0003, attr(0x0014, []byte(strings.Repeat("é", 128)))),
		"nonce-763":               message(0x0003, attr(0x0015, bytes.Repeat([]byte("n"), 763))),
		"length-fffc-empty":       header(0x0001, 0xFFFC),
		"length-not-multiple-4":   append(header(0x0001, 5), 1, 2, 3, 4, 5),
		"attr-length-ffff":        append(header(0x0001, 8), 0x00, 0x06, 0xFF, 0xFF, 1, 2, 3, 4),
		"odd-username-misaligned": append(header(0x0001, 16), 0x00, 0x06, 0x00, 0x05, 'a', 'b', 'c', 'd', 'e', 0x00, 0x19, 0x00, 0x04, 17, 0, 0),
		"top-bits-set":            append([]byte{0xC0, 0x01}, header(0x0001, 0)[2:]...),
		"wrong-magic":             append(header(0x0001, 0)[:4], 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
		"zero-length-attrs-1000":  message(0x0001, zero...),
		"binding-response":        message(0x0101),
		"send-indication":         message(0x0016, attr(0x0012, []byte{0, 1, 0x21, 0x42, 0x5E, 0x12, 0xA4, 0x40}), attr(0x0013, []byte("data"))),
		"channel-data":            {0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4},
	}
}
