package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
)

type hasher struct{ h hash.Hash }

func newHasher() *hasher { return &hasher{sha256.New()} }

func (h *hasher) Write(b []byte) { h.h.Write(b) }

func (h *hasher) hex() string { return hex.EncodeToString(h.h.Sum(nil)) }
