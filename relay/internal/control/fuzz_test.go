package control

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/alloc"
	"github.com/ferryrelay/ferry/relay/internal/wire"
	"github.com/pion/stun/v4"
)

// FuzzHandle feeds raw bytes from a client to the control plane's entry point, as a UDP
// datagram and as a frame on a TCP stream. Nothing may panic, hang or leak; whatever is
// answered must be one well-formed STUN message. The committed corpus is in
// testdata/fuzz/FuzzHandle (the C10 probes, a browser's Allocate, RFC 5769 vectors).
func FuzzHandle(f *testing.F) {
	x := newHarness(f)
	client := netip.MustParseAddrPort("127.0.0.9:20000")
	udp := x.source(client)
	tcp := x.source(client)
	tcp.Key.Transport = wire.TCP
	tcp.Client = alloc.Client{Addr: client, Stream: discard{}}
	f.Fuzz(func(t *testing.T, raw []byte) {
		x.answers = x.answers[:0]
		x.h.Handle(raw, udp)
		x.h.Handle(raw, tcp)
		for _, a := range x.answers {
			if m := (&stun.Message{Raw: a}); m.Decode() != nil {
				t.Fatalf("answered a malformed message %x", a)
			}
		}
		x.endAll()
	})
}

// FuzzHandleAuthenticated reaches the methods behind authentication: the fuzzed attributes
// are wrapped into a request of the fuzzed method with valid USERNAME, REALM, NONCE and
// MESSAGE-INTEGRITY, sent on a 5-tuple that already has an allocation (for Refresh,
// CreatePermission, ChannelBind, Connect) or none (Allocate, ConnectionBind).
func FuzzHandleAuthenticated(f *testing.F) {
	x := newHarness(f)
	client := netip.MustParseAddrPort("127.0.0.9:20001")
	f.Fuzz(func(t *testing.T, method uint16, allocated bool, attrs []byte) {
		x.answers = x.answers[:0]
		src := x.source(client)
		c := x.credentials(t, client.Addr())
		if allocated {
			x.h.Handle(c.request(t, stun.MethodAllocate, udpTransport), src)
		}
		m := stun.New()
		m.Type = stun.NewType(stun.Method(method&0x0FFF), stun.ClassRequest)
		m.NewTransactionID() //nolint:errcheck // crypto/rand
		m.Raw = append(m.Raw, attrs...)
		m.Length = uint32(len(attrs))
		m.WriteLength()
		if m.Decode() != nil {
			return
		}
		for _, s := range []stun.Setter{stun.NewUsername(c.username), stun.NewRealm(realm), stun.NewNonce(c.nonce),
			stun.MessageIntegrity(c.key)} {
			if s.AddTo(m) != nil {
				return
			}
		}
		x.h.Handle(m.Raw, src)
		for _, a := range x.answers {
			if m := (&stun.Message{Raw: a}); m.Decode() != nil {
				t.Fatalf("answered a malformed message %x", a)
			}
		}
		x.endAll()
	})
}

type authSeed struct {
	method    uint16
	allocated bool
	attrs     []byte
}

func authenticatedSeeds() []authSeed {
	attrs := func(setters ...stun.Setter) []byte {
		m := stun.New()
		m.WriteHeader()
		for _, s := range setters {
			_ = s.AddTo(m)
		}
		return m.Raw[wire.HeaderLen:]
	}
	peer := alloc.XORAddr(stun.AttrXORPeerAddress, netip.MustParseAddrPort("127.0.0.2:5000"))
	ch := stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{0x40, 0, 0, 0}}
	return []authSeed{
		{uint16(stun.MethodAllocate), false, attrs(udpTransport)},
		{uint16(stun.MethodAllocate), false, attrs(udpTransport, stun.RawAttribute{Type: stun.AttrEvenPort, Value: []byte{0x80}})},
		{uint16(stun.MethodAllocate), false, attrs(udpTransport, stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{2, 0, 0, 0}})},
		{uint16(stun.MethodRefresh), true, attrs(stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0x0e, 0x10}})},
		{uint16(stun.MethodCreatePermission), true, attrs(peer, peer)},
		{uint16(stun.MethodChannelBind), true, attrs(ch, peer)},
		{uint16(stun.MethodConnect), true, attrs(peer)},
		{uint16(stun.MethodConnectionBind), false, attrs(stun.RawAttribute{Type: stun.AttrConnectionID, Value: []byte{0, 0, 0, 1}})},
	}
}

// endAll ends every allocation, so that fuzzing never runs out of relay ports.
func (x *harness) endAll() {
	x.now = x.now.Add(13 * time.Hour)
	x.table.Sweep()
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
