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
// Encoded as base64url without padding: 4 bytes of expiry (Unix seconds) and 8 bytes of MAC,
// 16 characters, so that a 401 stays small (C22).
type nonces struct {
	key      [32]byte
	lifetime time.Duration
	macs     sync.Pool // hash.Hash: HMAC-SHA256 keyed with key, reused
}

const (
	nonceRaw = 4 + 8
	nonceLen = 16 // base64url of nonceRaw bytes
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
	exp := uint32(now.Add(n.lifetime).Unix())
	binary.BigEndian.PutUint32(raw[:4], exp)
	n.mac(raw[4:], exp, client)
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
	exp := binary.BigEndian.Uint32(raw[:4])
	var want [8]byte
	n.mac(want[:], exp, client)
	if !hmac.Equal(want[:], raw[4:nonceRaw]) {
		return nonceForged
	}
	if int64(exp) <= now.Unix() {
		return nonceStale
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
