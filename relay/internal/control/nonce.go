package control

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync"
	"time"
)

// nonces issues and checks stateless nonces (RFC 8489 §9.2): a nonce is its expiry and an
// HMAC over the expiry and the client's IP address, keyed by a random key of this process.
// Nothing is stored per client before it authenticates (C35), a nonce works from every port
// of the client's address (a browser's candidates, an RFC 6062 data connection), and a
// restart invalidates every nonce (the client then gets a 401 with a fresh one).
//
// Encoded as base64url without padding: 3 bytes of expiry (Unix seconds modulo 2^24, about
// 194 days, read relative to now) and a 6-byte (48-bit) MAC, 12 characters, so that the 401
// answering a browser's 28-byte Allocate fits in 56 bytes (C22: twice the request) with a
// realm of up to 8 bytes.
type nonces struct {
	key      [32]byte
	lifetime time.Duration
	macs     sync.Pool // hash.Hash: HMAC-SHA256 keyed with key, reused
}

const (
	nonceRaw = 3 + 6
	nonceLen = 12 // base64url of nonceRaw bytes
	expMask  = 1<<24 - 1
)

func newNonces(lifetime time.Duration) *nonces {
	n := &nonces{lifetime: lifetime}
	_, _ = rand.Read(n.key[:])
	n.macs.New = func() any { return hmac.New(sha256.New, n.key[:]) }
	return n
}

// issue returns a fresh nonce for client, valid for the lifetime from now.
func (n *nonces) issue(client netip.Addr, now time.Time) string {
	var raw [nonceRaw]byte
	exp := uint32(now.Add(n.lifetime).Unix()) & expMask
	raw[0], raw[1], raw[2] = byte(exp>>16), byte(exp>>8), byte(exp)
	n.mac(raw[3:], exp, client)
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// nonceState is the verdict on a nonce.
type nonceState int

const (
	nonceValid  nonceState = iota
	nonceStale             // ours, for this client, expired: 438 (RFC 8489 §9.2.4)
	nonceForged            // not ours, or another client's: 401
)

// check judges a nonce a client sent.
func (n *nonces) check(nonce string, client netip.Addr, now time.Time) nonceState {
	var raw [nonceRaw + 2]byte // room for a decoder that writes past a short result
	if len(nonce) != nonceLen {
		return nonceForged
	}
	if k, err := base64.RawURLEncoding.Decode(raw[:], []byte(nonce)); err != nil || k != nonceRaw {
		return nonceForged
	}
	exp := uint32(raw[0])<<16 | uint32(raw[1])<<8 | uint32(raw[2])
	var want [6]byte
	n.mac(want[:], exp, client)
	if !hmac.Equal(want[:], raw[3:nonceRaw]) {
		return nonceForged
	}
	// Seconds from now to the expiry, modulo 2^24 and sign-extended: negative or zero is
	// stale; more than the lifetime ahead was never issued (or wrapped around, 97 days on).
	left := int32((exp-uint32(now.Unix()))<<8) >> 8
	switch {
	case left <= 0:
		return nonceStale
	case time.Duration(left)*time.Second > n.lifetime+time.Second:
		return nonceForged
	}
	return nonceValid
}

func (n *nonces) mac(out []byte, exp uint32, client netip.Addr) {
	h := n.macs.Get().(hash.Hash)
	defer n.macs.Put(h)
	h.Reset()
	var b [4 + 16]byte
	binary.BigEndian.PutUint32(b[:4], exp)
	a := client.Unmap().As16()
	copy(b[4:], a[:])
	h.Write(b[:])
	var sum [sha256.Size]byte
	copy(out, h.Sum(sum[:0]))
}
