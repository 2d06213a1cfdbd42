package relay

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
)

// Wire formats of RFC 8489 (STUN) and RFC 8656 (TURN) that the data path reads and writes
// without allocating. Control messages go through pion/stun instead.

const (
	stunHeaderLen  = 20
	stunMagic      = 0x2112A442
	channelHdrLen  = 4
	fingerprintXOR = 0x5354554e

	attrXORPeerAddress = 0x0012
	attrData           = 0x0013
	attrFingerprint    = 0x8028

	typeBindingRequest        = 0x0001
	typeSendIndication        = 0x0016
	typeDataIndication        = 0x0017
	typeConnectionBindRequest = 0x000B
	typeConnectionBindSuccess = 0x010B

	// RFC 8656 §12: channel numbers a ChannelBind may install.
	minChannel = 0x4000
	maxChannel = 0x4FFF
	// RFC 5766 §11 range that stream framing still recognises, so that a frame on a
	// legacy channel number does not desynchronise a TCP stream (C18).
	maxFramingChannel = 0x7FFF

	// dataIndicationMaxHdr is the header room a Data indication needs in front of the
	// payload: STUN header, XOR-PEER-ADDRESS for IPv6 (4+20), DATA attribute header (4).
	dataIndicationMaxHdr = stunHeaderLen + 4 + 20 + 4
	// headroom is reserved in front of every payload read from a peer.
	headroom = dataIndicationMaxHdr
)

// frameKind classifies the first bytes of a client message (RFC 7983 demultiplexing).
type frameKind uint8

const (
	frameInvalid frameKind = iota
	frameIncomplete
	frameSTUN
	frameChannelData
)

// nextFrame finds the first TURN frame in b. On a stream (TCP/TLS) a ChannelData frame is
// padded to 4 bytes and the returned size includes the padding (RFC 8656 §12.5); in a
// datagram the size is the header plus LENGTH. payloadLen is LENGTH for ChannelData and the
// message length for STUN.
func nextFrame(b []byte, stream bool) (kind frameKind, size, payloadLen int) {
	if len(b) < channelHdrLen {
		return frameIncomplete, 0, 0
	}
	switch b[0] >> 6 {
	case 0: // STUN: top two bits zero
		if len(b) < stunHeaderLen {
			return frameIncomplete, 0, 0
		}
		if binary.BigEndian.Uint32(b[4:8]) != stunMagic {
			return frameInvalid, 0, 0
		}
		l := int(binary.BigEndian.Uint16(b[2:4]))
		if l%4 != 0 {
			return frameInvalid, 0, 0
		}
		if len(b) < stunHeaderLen+l {
			return frameIncomplete, 0, 0
		}
		return frameSTUN, stunHeaderLen + l, l
	case 1: // ChannelData: 0x4000-0x7FFF
		num := binary.BigEndian.Uint16(b[0:2])
		if num > maxFramingChannel {
			return frameInvalid, 0, 0
		}
		l := int(binary.BigEndian.Uint16(b[2:4]))
		size = channelHdrLen + l
		if stream {
			size = channelHdrLen + pad4(l)
		}
		if len(b) < size {
			return frameIncomplete, 0, 0
		}
		return frameChannelData, size, l
	default:
		return frameInvalid, 0, 0
	}
}

func pad4(n int) int { return (n + 3) &^ 3 }

// stunAttr walks the attributes of a complete STUN message and returns the value of the
// first attribute of type t, or nil. It never reads past the message.
func stunAttr(msg []byte, t uint16) []byte {
	for off := stunHeaderLen; off+4 <= len(msg); {
		at := binary.BigEndian.Uint16(msg[off:])
		al := int(binary.BigEndian.Uint16(msg[off+2:]))
		if off+4+al > len(msg) {
			return nil
		}
		if at == t {
			return msg[off+4 : off+4+al]
		}
		off += 4 + pad4(al)
	}
	return nil
}

// fingerprintOK verifies FINGERPRINT when present (RFC 8489 §14.7). A message without one
// is fine; one with a wrong value, or not as the last attribute, is not.
func fingerprintOK(msg []byte) bool {
	for off := stunHeaderLen; off+4 <= len(msg); {
		at := binary.BigEndian.Uint16(msg[off:])
		al := int(binary.BigEndian.Uint16(msg[off+2:]))
		if off+4+al > len(msg) {
			return false
		}
		if at == attrFingerprint {
			if al != 4 || off+8 != len(msg) {
				return false
			}
			want := crc32.ChecksumIEEE(msg[:off]) ^ fingerprintXOR
			return binary.BigEndian.Uint32(msg[off+4:]) == want
		}
		off += 4 + pad4(al)
	}
	return true
}

// decodeXORAddr decodes an XOR-PEER-ADDRESS (or XOR-MAPPED-ADDRESS) value using the
// transaction ID of msg. IPv4-mapped IPv6 results are unmapped.
func decodeXORAddr(v, msg []byte) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ uint16(stunMagic>>16)
	switch v[1] {
	case 0x01:
		if len(v) != 8 {
			return netip.AddrPort{}, false
		}
		var a [4]byte
		x := binary.BigEndian.Uint32(v[4:8]) ^ stunMagic
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

// putXORAddrAttr writes an XOR-PEER-ADDRESS attribute for ap at b and returns its length
// (12 or 24). txid is the 12-byte transaction ID.
func putXORAddrAttr(b []byte, ap netip.AddrPort, txid []byte) int {
	addr := ap.Addr()
	binary.BigEndian.PutUint16(b[0:], attrXORPeerAddress)
	b[4] = 0
	binary.BigEndian.PutUint16(b[6:], ap.Port()^uint16(stunMagic>>16))
	if addr.Is4() {
		binary.BigEndian.PutUint16(b[2:], 8)
		b[5] = 0x01
		a := addr.As4()
		binary.BigEndian.PutUint32(b[8:], binary.BigEndian.Uint32(a[:])^stunMagic)
		return 12
	}
	binary.BigEndian.PutUint16(b[2:], 20)
	b[5] = 0x02
	a := addr.As16()
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:], stunMagic)
	copy(key[4:], txid)
	for i := range a {
		b[8+i] = a[i] ^ key[i]
	}
	return 24
}

// dataIndicationHdrLen is the header length in front of the payload for a Data indication
// from a peer of this address family.
func dataIndicationHdrLen(peer netip.AddrPort) int {
	if peer.Addr().Is4() {
		return stunHeaderLen + 12 + 4
	}
	return stunHeaderLen + 24 + 4
}

// encodeDataIndication writes a Data indication header into buf[start:start+hdr] for the
// payload already at buf[start+hdr:start+hdr+n], zeroes the attribute padding after it, and
// returns the whole message buf[start:end] (RFC 8656 §11.3).
func encodeDataIndication(buf []byte, start, n int, peer netip.AddrPort) []byte {
	hdr := dataIndicationHdrLen(peer)
	m := buf[start:]
	end := hdr + pad4(n)
	binary.BigEndian.PutUint16(m[0:], typeDataIndication)
	binary.BigEndian.PutUint16(m[2:], uint16(end-stunHeaderLen))
	binary.BigEndian.PutUint32(m[4:], stunMagic)
	binary.BigEndian.PutUint64(m[8:], rand.Uint64())
	binary.BigEndian.PutUint32(m[16:], rand.Uint32())
	off := stunHeaderLen + putXORAddrAttr(m[stunHeaderLen:], peer, m[8:20])
	binary.BigEndian.PutUint16(m[off:], attrData)
	binary.BigEndian.PutUint16(m[off+2:], uint16(n))
	for i := hdr + n; i < end; i++ {
		m[i] = 0
	}
	return m[:end]
}

// encodeChannelData writes the ChannelData header into buf[start:start+4] for the payload at
// buf[start+4:start+4+n]; on a stream it zero-pads to 4 bytes (RFC 8656 §12.5).
func encodeChannelData(buf []byte, start int, num uint16, n int, stream bool) []byte {
	m := buf[start:]
	binary.BigEndian.PutUint16(m[0:], num)
	binary.BigEndian.PutUint16(m[2:], uint16(n))
	end := channelHdrLen + n
	if stream {
		padded := channelHdrLen + pad4(n)
		for i := end; i < padded; i++ {
			m[i] = 0
		}
		end = padded
	}
	return m[:end]
}
