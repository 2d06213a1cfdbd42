package main

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/pion/stun/v4"
)

// turnClient is the load generator's TURN client: just enough of RFC 8656 to allocate, bind a
// channel and then push ChannelData as fast as the server takes it, over UDP, TCP or TLS.
type turnClient struct {
	conn   net.Conn
	stream bool
	rbuf   []byte
	r, w   int
	user   string
	realm  string
	nonce  string
	key    []byte
}

// clientIP is the load generator's address: clients send from 127.0.0.9 (the allocation-
// rate runs from 127.0.0.9 + run) so that their ports never collide with relay ports,
// which the servers bind on 127.0.0.1. The consultations phase sends from consultIP, and
// each paced run's uclient from an address of its own (pacedIP): uclient leaves behind the
// probe allocation it makes for each client, and a later client that happened to get the
// same 5-tuple would meet it (437).
func clientIP(run int) net.IP { return net.IPv4(127, 0, 0, byte(9+run)) }

var consultIP = net.IPv4(127, 0, 0, 16)

// pacedIP is the client address of paced run k (127.0.0.32 and up).
func pacedIP(k int) net.IP { return net.IPv4(127, 0, 0, byte(32+k%200)) }

func dialTURN(transport, addr string) (*turnClient, error) {
	return dialTURNAt(clientIP(0), transport, addr)
}

// dialTURNFrom dials from clientIP(run): a fresh address gives fresh 5-tuples, whatever
// state a server keeps for allocations a previous run deleted.
func dialTURNFrom(run int, transport, addr string) (*turnClient, error) {
	return dialTURNAt(clientIP(run), transport, addr)
}

func dialTURNAt(ip net.IP, transport, addr string) (*turnClient, error) {
	var conn net.Conn
	var err error
	switch transport {
	case "udp":
		conn, err = (&net.Dialer{LocalAddr: &net.UDPAddr{IP: ip}}).Dial("udp4", addr)
		if err == nil {
			uc := conn.(*net.UDPConn)
			_ = uc.SetReadBuffer(1 << 20)
			_ = uc.SetWriteBuffer(1 << 20)
		}
	case "tcp":
		conn, err = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).Dial("tcp4", addr)
	case "tls":
		conn, err = tls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}, "tcp4", addr,
			&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // benchmark against a throwaway certificate
	default:
		return nil, fmt.Errorf("unknown transport %q", transport)
	}
	if err != nil {
		return nil, err
	}
	// A UDP read holds one datagram; a stream read may hold many frames.
	size := 4096
	if transport != "udp" {
		size = 1 << 16
	}
	return &turnClient{conn: conn, stream: transport != "udp", rbuf: make([]byte, size)}, nil
}

func (c *turnClient) Close() error { return c.conn.Close() }

// readFrame returns the next STUN message or ChannelData frame (padding stripped).
func (c *turnClient) readFrame() ([]byte, error) {
	if !c.stream {
		n, err := c.conn.Read(c.rbuf)
		return c.rbuf[:n], err
	}
	for {
		if avail := c.w - c.r; avail >= 4 {
			b := c.rbuf[c.r:c.w]
			var size, plen int
			if b[0]>>6 == 1 {
				plen = int(binary.BigEndian.Uint16(b[2:]))
				size = 4 + (plen+3)&^3
				plen += 4
			} else {
				size = 20 + int(binary.BigEndian.Uint16(b[2:]))
				plen = size
			}
			if avail >= size {
				f := b[:plen]
				c.r += size
				return f, nil
			}
		}
		if c.r > 0 {
			c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
			c.r = 0
		}
		n, err := c.conn.Read(c.rbuf[c.w:])
		if err != nil {
			return nil, err
		}
		c.w += n
	}
}

// buffered reports whether a whole frame is already in the read buffer (readFrame returns
// it without a system call).
func (c *turnClient) buffered() bool {
	if !c.stream || c.w-c.r < 4 {
		return false
	}
	b := c.rbuf[c.r:c.w]
	size := 20 + int(binary.BigEndian.Uint16(b[2:]))
	if b[0]>>6 == 1 {
		size = 4 + (int(binary.BigEndian.Uint16(b[2:]))+3)&^3
	}
	return c.w-c.r >= size
}

func (c *turnClient) transact(m *stun.Message) (*stun.Message, error) {
	if _, err := c.conn.Write(m.Raw); err != nil {
		return nil, err
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		b, err := c.readFrame()
		if err != nil {
			return nil, err
		}
		if !stun.IsMessage(b) {
			continue
		}
		r := &stun.Message{Raw: append([]byte(nil), b...)}
		if err := r.Decode(); err != nil {
			return nil, err
		}
		if r.TransactionID == m.TransactionID {
			return r, nil
		}
	}
}

func (c *turnClient) request(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for range 2 {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		if c.key != nil {
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.MessageIntegrity(c.key))
		}
		m, err := stun.Build(setters...)
		if err != nil {
			return nil, err
		}
		r, err := c.transact(m)
		if err != nil {
			return nil, err
		}
		var ec stun.ErrorCodeAttribute
		if r.Type.Class == stun.ClassErrorResponse && ec.GetFrom(r) == nil {
			var nonce stun.Nonce
			var realm stun.Realm
			if (ec.Code == 401 && c.key == nil || ec.Code == 438) && nonce.GetFrom(r) == nil {
				c.nonce = nonce.String()
				if realm.GetFrom(r) == nil {
					c.realm = realm.String()
				}
				continue
			}
			return nil, fmt.Errorf("%s: error %d", method, ec.Code)
		}
		return r, nil
	}
	return nil, fmt.Errorf("%s: no success after a nonce retry", method)
}

var udpTransportAttr = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

// allocate authenticates with a TURN REST credential minted from secret and allocates.
func (c *turnClient) allocate(secret, user string) (netip.AddrPort, error) {
	c.user = strconv.FormatInt(time.Now().Add(12*time.Hour).Unix(), 10) + ":" + user
	pw := auth.RESTPassword(secret, c.user)
	// The first request learns realm and nonce from the 401.
	m, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransportAttr)
	r, err := c.transact(m)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var nonce stun.Nonce
	var realm stun.Realm
	if nonce.GetFrom(r) != nil || realm.GetFrom(r) != nil {
		var ec stun.ErrorCodeAttribute
		_ = ec.GetFrom(r)
		return netip.AddrPort{}, fmt.Errorf("allocate: no 401 challenge but %s %d %s", r.Type, ec.Code, ec.Reason)
	}
	c.nonce, c.realm = nonce.String(), realm.String()
	c.key = auth.LongTermKey(c.user, c.realm, pw)
	r, err = c.request(stun.MethodAllocate, udpTransportAttr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(r, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, err
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port)), nil
}

type xorPeer netip.AddrPort

func (p xorPeer) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	a := stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

func (c *turnClient) channelBind(num uint16, peer netip.AddrPort) error {
	_, err := c.request(stun.MethodChannelBind,
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(num >> 8), byte(num), 0, 0}}, xorPeer(peer))
	return err
}

// deallocate sends Refresh with LIFETIME 0.
func (c *turnClient) deallocate() error {
	_, err := c.request(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
	return err
}

// frame builds a ChannelData frame of payload size (padded on streams).
func (c *turnClient) frame(num uint16, size int) []byte {
	n := 4 + size
	if c.stream {
		n = 4 + (size+3)&^3
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b, num)
	binary.BigEndian.PutUint16(b[2:], uint16(size))
	return b
}
