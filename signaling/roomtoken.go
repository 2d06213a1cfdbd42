package signaling

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// errTokenTooLong marks a room token whose validity the server does not allow; it wraps
// auth.ErrTokenInvalid, so callers answer it as any bad token (close 4401, HTTP 401).
var errTokenTooLong = fmt.Errorf("%w: validity beyond the server's limits", auth.ErrTokenInvalid)

// roomToken verifies a room token (auth.RoomTokens.Verify) and the server's limits on its
// validity, the same as POST /v1/rooms puts on the rooms it creates: the room may stay open
// at most rooms.max_ttl from when it opens or from now, whichever is later
// (exp − max(nbf, now) ≤ MaxTTL), and open at most MaxScheduleAhead from now; both with the
// tokens' clock-skew leeway (auth.DefaultRoomLeeway). The claims come with Verify's errors
// as they do from Verify. Errors: those of Verify; errTokenTooLong (with the reason).
func (h *Handler) roomToken(token string) (auth.RoomClaims, error) {
	claims, err := h.cfg.Rooms.Tokens.Verify(token)
	if err != nil && !errors.Is(err, auth.ErrTokenNotYetValid) {
		return claims, err
	}
	now := h.now()
	start := now
	if claims.NotBefore.After(now) {
		start = claims.NotBefore
	}
	switch maxTTL := h.cfg.Rooms.MaxTTL; {
	case claims.NotBefore.Sub(now) > MaxScheduleAhead+auth.DefaultRoomLeeway:
		return auth.RoomClaims{}, fmt.Errorf("%w: the room opens more than %d days ahead (nbf)", errTokenTooLong, MaxScheduleAhead/(24*time.Hour))
	case claims.Expires.Sub(start) > maxTTL+auth.DefaultRoomLeeway:
		return auth.RoomClaims{}, fmt.Errorf("%w: the room would stay open longer than %s (exp; rooms.max_ttl)", errTokenTooLong, maxTTL)
	}
	return claims, err
}

// tooLongReason is the close reason of a token beyond the server's limits (at most 123
// bytes, RFC 6455 §5.5).
const tooLongReason = "token valid longer than the server allows (rooms.max_ttl)"
