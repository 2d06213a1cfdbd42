// Package wire reads and writes the TURN/STUN framing the data path touches per packet
// (RFC 8489 §5-§6, RFC 8656 §11-§12, RFC 7983 demultiplexing) without allocating; control
// messages are decoded with pion/stun instead.
package wire

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
)

// Sizes, magic values, attribute and message types (RFC 8489 §5, §14, §18; RFC 8656 §12,
// §17-§18; RFC 6062 §6).
const (
	HeaderLen        = 20         // STUN header
	Magic            = 0x2112A442 // STUN magic cookie
	ChannelHeaderLen = 4          // ChannelData header: channel number and LENGTH
	fingerprintXOR   = 0x5354554e

	AttrXORPeerAddress = 0x0012
	AttrData           = 0x0013
	AttrFingerprint    = 0x8028

	TypeBindingRequest        = 0x0001
	TypeSendIndication        = 0x0016
	TypeDataIndication        = 0x0017
	TypeConnectionBindRequest = 0x000B
	TypeConnectionBindSuccess = 0x010B
	TypeConnectionAttempt     = 0x001C // ConnectionAttempt indication (RFC 6062 §6.1)

	// RFC 8656 §12: channel numbers a ChannelBind may install.
	MinChannel = 0x4000
	MaxChannel = 0x4FFF
	// RFC 5766 §11 range that stream framing still recognises, so that a frame on a
	// legacy channel number does not desynchronise a TCP stream (C18).
	MaxFramingChannel = 0x7FFF

	// dataIndicationMaxHdr is the header room a Data indication needs in front of the
	// payload: STUN header, XOR-PEER-ADDRESS for IPv6 (4+20), DATA attribute header (4).
	dataIndicationMaxHdr = HeaderLen + 4 + 20 + 4
	// Headroom is reserved in front of every payload read from a peer.
	Headroom = dataIndicationMaxHdr
)

// FrameKind classifies the first bytes of a client message (RFC 7983 demultiplexing).
type FrameKind uint8

// Frame kinds.
const (
	FrameInvalid     FrameKind = iota // neither STUN nor ChannelData: close a stream, drop a datagram
	FrameIncomplete                   // more bytes are needed
	FrameSTUN                         // a STUN message
	FrameChannelData                  // a ChannelData message
)

// NextFrame finds the first TURN frame in b. On a stream (TCP/TLS) a ChannelData frame is
// padded to 4 bytes and the returned size includes the padding (RFC 8656 §12.5); in a
// datagram the size is the header plus LENGTH. payloadLen is LENGTH for ChannelData and the
// message length for STUN.
func NextFrame(b []byte, stream bool) (kind FrameKind, size, payloadLen int) {
	if len(b) < ChannelHeaderLen {
		return FrameIncomplete, 0, 0
	}
	switch b[0] >> 6 {
	case 0: // STUN: top two bits zero
		if len(b) < HeaderLen {
			return FrameIncomplete, 0, 0
		}
		if binary.BigEndian.Uint32(b[4:8]) != Magic {
			return FrameInvalid, 0, 0
		}
		l := int(binary.BigEndian.Uint16(b[2:4]))
		if l%4 != 0 {
			return FrameInvalid, 0, 0
		}
		if len(b) < HeaderLen+l {
			return FrameIncomplete, 0, 0
		}
		return FrameSTUN, HeaderLen + l, l
	case 1: // ChannelData: 0x4000-0x7FFF
		num := binary.BigEndian.Uint16(b[0:2])
		if num > MaxFramingChannel {
			return FrameInvalid, 0, 0
		}
		l := int(binary.BigEndian.Uint16(b[2:4]))
		size = ChannelHeaderLen + l
		if stream {
			size = ChannelHeaderLen + Pad4(l)
		}
		if len(b) < size {
			return FrameIncomplete, 0, 0
		}
		return FrameChannelData, size, l
	default:
		return FrameInvalid, 0, 0
	}
}

// Pad4 rounds n up to a multiple of 4 (STUN attribute and stream padding).
func Pad4(n int) int { return (n + 3) &^ 3 }

// Attr walks the attributes of a complete STUN message and returns the value of the
// first attribute of type t, or nil. It never reads past the message.
func Attr(msg []byte, t uint16) []byte {
	for off := HeaderLen; off+4 <= len(msg); {
		at := binary.BigEndian.Uint16(msg[off:])
		al := int(binary.BigEndian.Uint16(msg[off+2:]))
		if off+4+al > len(msg) {
			return nil
		}
		if at == t {
			return msg[off+4 : off+4+al]
		}
		off += 4 + Pad4(al)
	}
	return nil
}

// FingerprintOK verifies FINGERPRINT when present (RFC 8489 §14.7). A message without one
// is fine; one with a wrong value, or not as the last attribute, is not.
func FingerprintOK(msg []byte) bool {
	for off := HeaderLen; off+4 <= len(msg); {
		at := binary.BigEndian.Uint16(msg[off:])
		al := int(binary.BigEndian.Uint16(msg[off+2:]))
		if off+4+al > len(msg) {
			return false
		}
		if at == AttrFingerprint {
			if al != 4 || off+8 != len(msg) {
				return false
			}
			want := crc32.ChecksumIEEE(msg[:off]) ^ fingerprintXOR
			return binary.BigEndian.Uint32(msg[off+4:]) == want
		}
		off += 4 + Pad4(al)
	}
	return true
}

// DecodeXORAddr decodes an XOR-PEER-ADDRESS (or XOR-MAPPED-ADDRESS) value using the
// transaction ID of msg. IPv4-mapped IPv6 results are unmapped.
func DecodeXORAddr(v, msg []byte) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ uint16(Magic>>16)
	switch v[1] {
	case 0x01:
		if len(v) != 8 {
			return netip.AddrPort{}, false
		}
		var a [4]byte
		x := binary.BigEndian.Uint32(v[4:8]) ^ Magic
		binary.BigEndian.PutUint32(a[:], x)
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case 0x02:
		if len(v) != 20 {
			return netip.AddrPort{}, false
		}
		var a [16]byte
		copy(a[:], v[4:20])
		for i := 0; i < 4; i++ {
			a[i] ^= msg[4+i]
		}
		for i := 4; i < 16; i++ {
			a[i] ^= msg[8+i-4]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// PutXORAddrAttr writes an XOR-PEER-ADDRESS attribute for ap at b and returns its length
// (12 or 24). txid is the 12-byte transaction ID.
func PutXORAddrAttr(b []byte, ap netip.AddrPort, txid []byte) int {
	addr := ap.Addr()
	binary.BigEndian.PutUint16(b[0:], AttrXORPeerAddress)
	b[4] = 0
	binary.BigEndian.PutUint16(b[6:], ap.Port()^uint16(Magic>>16))
	if addr.Is4() {
		binary.BigEndian.PutUint16(b[2:], 8)
		b[5] = 0x01
		a := addr.As4()
		binary.BigEndian.PutUint32(b[8:], binary.BigEndian.Uint32(a[:])^Magic)
		return 12
	}
	binary.BigEndian.PutUint16(b[2:], 20)
	b[5] = 0x02
	a := addr.As16()
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:], Magic)
	copy(key[4:], txid)
	for i := range a {
		b[8+i] = a[i] ^ key[i]
	}
	return 24
}

// DataIndicationHeaderLen is the header length in front of the payload for a Data indication
// from a peer of this address family.
func DataIndicationHeaderLen(peer netip.AddrPort) int {
	if peer.Addr().Is4() {
		return HeaderLen + 12 + 4
	}
	return HeaderLen + 24 + 4
}

// EncodeDataIndication writes a Data indication header into buf[start:start+hdr] for the
// payload already at buf[start+hdr:start+hdr+n], zeroes the attribute padding after it, and
// returns the whole message buf[start:end] (RFC 8656 §11.3).
func EncodeDataIndication(buf []byte, start, n int, peer netip.AddrPort) []byte {
	hdr := DataIndicationHeaderLen(peer)
	m := buf[start:]
	end := hdr + Pad4(n)
	binary.BigEndian.PutUint16(m[0:], TypeDataIndication)
	binary.BigEndian.PutUint16(m[2:], uint16(end-HeaderLen))
	binary.BigEndian.PutUint32(m[4:], Magic)
	binary.BigEndian.PutUint64(m[8:], rand.Uint64())
	binary.BigEndian.PutUint32(m[16:], rand.Uint32())
	off := HeaderLen + PutXORAddrAttr(m[HeaderLen:], peer, m[8:20])
	binary.BigEndian.PutUint16(m[off:], AttrData)
	binary.BigEndian.PutUint16(m[off+2:], uint16(n))
	for i := hdr + n; i < end; i++ {
		m[i] = 0
	}
	return m[:end]
}

// EncodeChannelData writes the ChannelData header into buf[start:start+4] for the payload at
// buf[start+4:start+4+n]; on a stream it zero-pads to 4 bytes (RFC 8656 §12.5).
func EncodeChannelData(buf []byte, start int, num uint16, n int, stream bool) []byte {
	m := buf[start:]
	binary.BigEndian.PutUint16(m[0:], num)
	binary.BigEndian.PutUint16(m[2:], uint16(n))
	end := ChannelHeaderLen + n
	if stream {
		padded := ChannelHeaderLen + Pad4(n)
		for i := end; i < padded; i++ {
			m[i] = 0
		}
		end = padded
	}
	return m[:end]
}

// Be16 reads a big-endian uint16 from the first two bytes of b.
func Be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// Transport is a client transport: how the client reaches the relay (the protocol of the
// allocation's 5-tuple, with TLS told apart from plain TCP).
type Transport uint8

// Client transports.
const (
	UDP Transport = iota
	TCP
	TLS
	// NumTransports is the number of transports, for arrays indexed by Transport.
	NumTransports
)

// String returns the metric label: "udp", "tcp" or "tls".
func (t Transport) String() string {
	switch t {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	case TLS:
		return "tls"
	}
	return "unknown"
}

// Stream reports whether t is a byte stream (TCP or TLS), whose ChannelData is padded.
func (t Transport) Stream() bool { return t != UDP }
