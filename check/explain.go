package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/pion/stun/v4"
)

// explain turns a transaction's error into one line an operator can act on.
func (r *run) explain(err error) error {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return codeError(te.ErrorCodeAttr)
	}
	where := r.server + "/" + r.res.Transport
	switch {
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "all retransmissions failed"):
		return fmt.Errorf("no answer from %s within %s: nothing listens there, a firewall drops %s, or the server ignores this client",
			where, r.opts.timeout(), strings.ToUpper(r.res.Transport))
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("this machine may not send to %s: a local firewall refuses it (%v)", where, err)
	case errors.Is(err, errRefused):
		return fmt.Errorf("%s refused: nothing listens there", where)
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "transaction closed"):
		return fmt.Errorf("%s closed the connection without an answer", where)
	}
	return err
}

// explainPeer explains a failure to install a permission for peer.
func (r *run) explainPeer(err error, peer net.Addr) error {
	var te *stun.TurnError
	if errors.As(err, &te) && te.ErrorCodeAttr.Code == stun.CodeForbidden {
		return fmt.Errorf("403 Forbidden: the server refuses to relay to %s, its own relayed address: its peer policy denies that range, so two participants who both use this relay cannot reach each other", peer)
	}
	return r.explain(err)
}

// codeError describes a TURN or STUN error response (RFC 8656 §18, RFC 8489 §14.8).
func codeError(ec stun.ErrorCodeAttribute) error {
	type text struct{ name, why string }
	t := map[stun.ErrorCode]text{
		stun.CodeBadRequest:            {"Bad Request", "the server found the request malformed"},
		stun.CodeUnauthorized:          {"Unauthorized", "the credentials were refused: a wrong secret or password, or a REST username that has expired"},
		stun.CodeForbidden:             {"Forbidden", "the server refuses this request (peer policy, or a credential not allowed here)"},
		stun.CodeAllocMismatch:         {"Allocation Mismatch", "the server holds no allocation for this connection"},
		stun.CodeStaleNonce:            {"Stale Nonce", "the nonce went stale twice in a row"},
		stun.CodeWrongCredentials:      {"Wrong Credentials", "the credentials differ from the allocation's"},
		stun.CodeUnsupportedTransProto: {"Unsupported Transport Protocol", "the server does not relay UDP"},
		stun.CodeAllocQuotaReached:     {"Allocation Quota Reached", "the allocation quota of this user is reached"},
		stun.CodeInsufficientCapacity:  {"Insufficient Capacity", "the server has no capacity left, or is draining for a restart"},
		stun.CodeServerError:           {"Server Error", "the server failed"},
	}[ec.Code]
	name := strings.TrimSpace(string(ec.Reason))
	if name == "" {
		name = t.name
	}
	if t.why == "" {
		return fmt.Errorf("error %d %s", ec.Code, name)
	}
	return fmt.Errorf("%d %s: %s", ec.Code, name, t.why)
}
