package check

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// errRefused is a refused TCP connection (or an ICMP port unreachable on a connected socket).
var errRefused = syscall.ECONNREFUSED

// client is one of the check's two TURN clients: its socket, pion's client and, once
// allocated, the relayed connection.
type client struct {
	conn    net.PacketConn
	server  net.Addr // where requests go
	turn    *turn.Client
	relay   net.PacketConn // nil before Allocate
	deleted bool           // the allocation was deleted by the check's own Refresh
	creds   Target
	realm   string // learnt from the server's 401
	nonce   string // the last nonce the server gave (refresh)
}

func newClient(conn net.PacketConn, server string, t Target) (*client, error) {
	tc, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: t.Username, Password: t.Password, LoggerFactory: quietLogs(), Software: "ferry check"})
	if err != nil {
		return nil, fmt.Errorf("TURN client: %w", err)
	}
	if err := tc.Listen(); err != nil {
		tc.Close()
		return nil, fmt.Errorf("TURN client: %w", err)
	}
	return &client{conn: conn, server: tc.TURNServerAddr(), turn: tc, creds: t}, nil
}

// transact sends req and waits for its answer within ctx.
func (c *client) transact(ctx context.Context, setters ...stun.Setter) (*stun.Message, error) {
	msg, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		return nil, err
	}
	res, err := c.turn.PerformTransactionWithContext(msg, c.server, false, ctx)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// binding sends a STUN Binding request and returns the mapped address (XOR-MAPPED-ADDRESS,
// RFC 8489 §14.2).
func (c *client) binding(ctx context.Context) (net.Addr, error) {
	res, err := c.transact(ctx, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return nil, err
	}
	if res.Type.Class == stun.ClassErrorResponse {
		return nil, turnError(res)
	}
	var mapped stun.XORMappedAddress
	if err := mapped.GetFrom(res); err != nil {
		return nil, fmt.Errorf("the Binding response carries no XOR-MAPPED-ADDRESS: %v", err)
	}
	return &net.UDPAddr{IP: mapped.IP, Port: mapped.Port}, nil
}

// allocate asks for an allocation with pion's client.
func (c *client) allocate(ctx context.Context) error {
	relay, err := c.turn.AllocateWithContext(ctx)
	if err != nil {
		return err
	}
	c.relay = relay
	c.realm = c.turn.Realm().String()
	return nil
}

// refresh sends an authenticated Refresh with lifetime seconds (0 deletes the allocation,
// RFC 8656 §8) and returns the granted lifetime. The first Refresh learns a nonce from the
// 401 to an unauthenticated one; later ones use it, and a 438 (or 401) with a fresh nonce
// gets one retry.
func (c *client) refresh(ctx context.Context, lifetime uint32) (uint32, error) {
	method := stun.NewType(stun.MethodRefresh, stun.ClassRequest)
	life := lifetimeAttr(lifetime)
	authed := func() (*stun.Message, error) {
		integrity := stun.NewLongTermIntegrity(c.creds.Username, c.realm, c.creds.Password)
		return c.transact(ctx, method, life, stun.NewUsername(c.creds.Username), stun.NewRealm(c.realm),
			stun.NewNonce(c.nonce), integrity, stun.Fingerprint)
	}
	var res *stun.Message
	var err error
	if c.nonce == "" {
		res, err = c.transact(ctx, method, life, stun.Fingerprint)
	} else {
		res, err = authed()
	}
	if err != nil {
		return 0, err
	}
	for range 2 {
		if res.Type.Class != stun.ClassErrorResponse {
			break
		}
		if code := errorCode(res); code != stun.CodeUnauthorized && code != stun.CodeStaleNonce {
			break
		}
		var nonce stun.Nonce
		if nonce.GetFrom(res) != nil {
			return 0, turnError(res)
		}
		c.nonce = nonce.String()
		var realm stun.Realm
		if realm.GetFrom(res) == nil {
			c.realm = realm.String()
		}
		if res, err = authed(); err != nil {
			return 0, err
		}
	}
	if res.Type.Class == stun.ClassErrorResponse {
		return 0, turnError(res)
	}
	var got lifetimeAttr
	if err := got.GetFrom(res); err != nil && lifetime > 0 {
		return 0, fmt.Errorf("the Refresh response carries no LIFETIME: %v", err)
	}
	return uint32(got), nil
}

// close ends the client: pion's Close of the relayed connection sends its own Refresh with
// lifetime 0 (answered with 437 when the check deleted the allocation already).
func (c *client) close() {
	if c.relay != nil {
		_ = c.relay.Close()
	}
	c.turn.Close()
	_ = c.conn.Close()
}

// lifetimeAttr is the LIFETIME attribute in seconds (RFC 8656 §18.2); pion/turn keeps its
// own type internal.
type lifetimeAttr uint32

func (l lifetimeAttr) AddTo(m *stun.Message) error {
	m.Add(stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, uint32(l)))
	return nil
}

func (l *lifetimeAttr) GetFrom(m *stun.Message) error {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil {
		return err
	}
	if len(v) != 4 {
		return errors.New("LIFETIME is not 4 bytes")
	}
	*l = lifetimeAttr(binary.BigEndian.Uint32(v))
	return nil
}

// errorCode returns the ERROR-CODE of an error response, or 0.
func errorCode(m *stun.Message) stun.ErrorCode {
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil {
		return 0
	}
	return ec.Code
}

func turnError(m *stun.Message) error {
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil {
		return fmt.Errorf("%s without an ERROR-CODE", m.Type)
	}
	return &stun.TurnError{StunMessageType: m.Type, ErrorCodeAttr: ec}
}
