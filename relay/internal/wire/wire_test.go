package wire

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzNextFrame checks the stream and datagram framer on arbitrary bytes: it never reads past
// its input, a complete frame's size covers its header and payload (padding included on a
// stream), and ChannelData channels stay in 0x4000-0x7FFF so a stream cannot desynchronise
// (C27). Seeds: testdata/fuzz/FuzzNextFrame.
func FuzzNextFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, stream bool) {
		kind, size, plen := NextFrame(b, stream)
		switch kind {
		case FrameSTUN:
			if size != HeaderLen+plen || size > len(b) || plen%4 != 0 || binary.BigEndian.Uint32(b[4:8]) != Magic {
				t.Fatalf("STUN frame size %d payload %d of %d bytes", size, plen, len(b))
			}
		case FrameChannelData:
			num := binary.BigEndian.Uint16(b)
			want := ChannelHeaderLen + plen
			if stream {
				want = ChannelHeaderLen + Pad4(plen)
			}
			if size != want || size > len(b) || num < MinChannel || num > MaxFramingChannel {
				t.Fatalf("ChannelData %#x size %d payload %d of %d bytes", num, size, plen, len(b))
			}
		case FrameIncomplete, FrameInvalid:
		default:
			t.Fatalf("kind %d", kind)
		}
		_ = FingerprintOK(b)
		_ = Attr(b, AttrData)
		if len(b) >= HeaderLen {
			_, _ = DecodeXORAddr(b[HeaderLen:], b)
		}
	})
}

// Data indications and ChannelData are framed in place, in the headroom in front of the
// payload, and decode back to the peer and payload they carry.
func TestFramingRoundTrip(t *testing.T) {
	for _, peer := range []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:5000"), netip.MustParseAddrPort("[2001:db8::7]:5000")} {
		for _, n := range []int{0, 1, 13, 100} {
			buf := make([]byte, Headroom+n+4)
			for i := range n {
				buf[Headroom+i] = byte(i)
			}
			m := EncodeDataIndication(buf, Headroom-DataIndicationHeaderLen(peer), n, peer)
			if kind, size, _ := NextFrame(m, false); kind != FrameSTUN || size != len(m) || !FingerprintOK(m) {
				t.Fatalf("Data indication of %d bytes from %s: kind %d size %d", n, peer, kind, size)
			}
			got, ok := DecodeXORAddr(Attr(m, AttrXORPeerAddress), m)
			if !ok || got != peer || len(Attr(m, AttrData)) != n {
				t.Fatalf("decoded %s %v, %d bytes", got, ok, len(Attr(m, AttrData)))
			}
			for _, stream := range []bool{false, true} {
				c := EncodeChannelData(buf, Headroom-ChannelHeaderLen, 0x4001, n, stream)
				if kind, size, plen := NextFrame(c, stream); kind != FrameChannelData || size != len(c) || plen != n {
					t.Fatalf("ChannelData of %d (stream %v): kind %d size %d payload %d", n, stream, kind, size, plen)
				}
			}
		}
	}
}
