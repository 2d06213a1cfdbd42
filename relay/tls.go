package relay

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// ALPN protocol ids: TURN's (RFC 7443) and HTTP's.
const (
	alpnTURN   = "stun.turn"
	alpnHTTP2  = "h2"
	alpnHTTP11 = "http/1.1"
)

// turnTLSConfig derives a listener's TLS configuration from base: TLS 1.2 or newer with
// forward-secret AEAD suites only (RFC 8656 §3.1 asks for current TLS practice; RFC 9325),
// unless base already narrows them, and ALPN stun.turn; a listener shared with HTTPS also
// offers h2 and http/1.1.
func turnTLSConfig(base *tls.Config, shared bool) *tls.Config {
	c := base.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	if c.CipherSuites == nil {
		c.CipherSuites = []uint16{ // TLS 1.2; TLS 1.3 suites are all AEAD and not configurable
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	c.NextProtos = []string{alpnTURN}
	if shared {
		// Server preference: coturn's client offers http/1.1 before stun.turn.
		c.NextProtos = []string{alpnTURN, alpnHTTP2, alpnHTTP11}
	}
	return c
}

// routeShared decides where a connection on a shared TLS listener goes. ALPN stun.turn means
// TURN and h2 means HTTP. Otherwise, with http/1.1 or no ALPN (browsers' TURN clients send
// none, coturn's offers http/1.1 too, and some HTTP clients send none), the first byte
// decides: every TURN connection opens with a STUN request, whose first byte is 0x00 or 0x01,
// and HTTP/1 opens with a method name. The byte read is replayed to whoever gets the
// connection. ctx ends the wait early (listener closing).
func routeShared(ctx context.Context, tc *tls.Conn, wait time.Duration) (conn net.Conn, http bool, err error) {
	switch tc.ConnectionState().NegotiatedProtocol {
	case alpnHTTP2:
		return tc, true, nil
	case alpnTURN:
		return tc, false, nil
	}
	_ = tc.SetReadDeadline(time.Now().Add(wait))
	stop := context.AfterFunc(ctx, func() { _ = tc.SetReadDeadline(time.Now()) })
	first := make([]byte, 1)
	_, err = tc.Read(first)
	stop()
	if err != nil {
		return nil, false, err
	}
	_ = tc.SetReadDeadline(time.Time{})
	return &replayConn{Conn: tc, first: first}, first[0] > 0x01, nil
}

// replayConn returns the bytes already read from Conn before reading on.
type replayConn struct {
	net.Conn
	first []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
