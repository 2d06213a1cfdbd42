package signaling

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling/web"
)

// Defaults for RoomsConfig's zero values.
const (
	DefaultRoomTTL          = 2 * time.Hour
	DefaultRoomMaxTTL       = 24 * time.Hour
	DefaultCredentialTTL    = time.Hour
	DefaultRefreshBefore    = 10 * time.Minute
	DefaultIdleTimeout      = 60 * time.Second
	DefaultPingInterval     = 15 * time.Second
	DefaultMaxMessageBytes  = 64 << 10
	DefaultMessageRate      = 20 // messages per second per connection
	DefaultMessageBurst     = 200
	DefaultConnectionsPerIP = 32
)

// RoomsConfig configures consultation rooms: POST /v1/rooms and GET /v1/rooms/{room}/ws.
type RoomsConfig struct {
	// Tokens verifies room tokens and mints them for POST /v1/rooms. Required.
	Tokens *auth.RoomTokens
	// Rooms holds the rooms; the handler closes it on Close. Required.
	Rooms Rooms
	// PublicURL is the base of links ("https://consult.clinic.example"): <base>/r/<room>#t=<token>.
	PublicURL string
	// DefaultTTL is a room's validity when a request names none; MaxTTL caps it.
	DefaultTTL, MaxTTL time.Duration
	// MaxGuests caps maxGuests in POST /v1/rooms (zero: DefaultMaxGuests).
	MaxGuests int
	// CredentialTTL is the lifetime of the TURN credentials in welcome, admitted and
	// ice-servers; a fresh ice-servers message is pushed RefreshBefore their expiry.
	CredentialTTL, RefreshBefore time.Duration
	// IdleTimeout closes a connection that sent nothing (not even a ping) for this long.
	// PingInterval is how often Ferry pings (WebSocket ping frames); a ping unanswered for
	// as long marks the connection dead.
	IdleTimeout, PingInterval time.Duration
	// MaxMessageBytes bounds a client message (1009 beyond); MessageRate and MessageBurst
	// bound messages per second per connection (CloseRateLimited beyond).
	MaxMessageBytes int64
	MessageRate     float64
	MessageBurst    int
	// ConnectionsPerIP bounds open room connections per client address (CloseTooManyConn).
	ConnectionsPerIP int
	// OriginPatterns are extra browser origins (host patterns) allowed to open the
	// WebSocket; the request's own host always is.
	OriginPatterns []string
	// Clock is the time source; nil means the real clock.
	Clock Clock
	// Logger receives counts and reasons, never ids, names, SDP or addresses; nil: none.
	Logger *slog.Logger
	// Page, if not nil, is served at /r/{room} (the links' target) and /assets/.
	Page *web.Page
}

func (c *RoomsConfig) defaults() {
	c.DefaultTTL = cmp.Or(c.DefaultTTL, DefaultRoomTTL)
	c.MaxTTL = cmp.Or(c.MaxTTL, DefaultRoomMaxTTL)
	c.MaxGuests = cmp.Or(c.MaxGuests, DefaultMaxGuests)
	c.CredentialTTL = cmp.Or(c.CredentialTTL, DefaultCredentialTTL)
	c.RefreshBefore = cmp.Or(c.RefreshBefore, DefaultRefreshBefore)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.PingInterval = cmp.Or(c.PingInterval, DefaultPingInterval)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.MessageRate = cmp.Or(c.MessageRate, DefaultMessageRate)
	c.MessageBurst = cmp.Or(c.MessageBurst, DefaultMessageBurst)
	c.ConnectionsPerIP = cmp.Or(c.ConnectionsPerIP, DefaultConnectionsPerIP)
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("component", "rooms")
}

// wsHub owns the room connections: it counts them per address and waits for them on Close.
type wsHub struct {
	mu      sync.Mutex
	conns   map[*wsConn]struct{}
	perIP   map[netip.Addr]int
	closing bool
	wg      sync.WaitGroup
}

// enter registers a connection's goroutine; false once the hub is closing.
func (hub *wsHub) enter() bool {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.closing {
		return false
	}
	hub.wg.Add(1)
	return true
}

// addIP counts a connection from ip; false when ip has limit already.
func (hub *wsHub) addIP(ip netip.Addr, limit int) bool {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.perIP[ip] >= limit {
		return false
	}
	hub.perIP[ip]++
	return true
}

func (hub *wsHub) removeIP(ip netip.Addr) {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.perIP[ip]--; hub.perIP[ip] <= 0 {
		delete(hub.perIP, ip)
	}
}

func (hub *wsHub) add(c *wsConn) bool {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.closing {
		return false
	}
	hub.conns[c] = struct{}{}
	return true
}

func (hub *wsHub) remove(c *wsConn) {
	hub.mu.Lock()
	delete(hub.conns, c)
	hub.mu.Unlock()
}

// close closes every connection with 1001 and waits for their goroutines.
func (hub *wsHub) close() {
	hub.mu.Lock()
	hub.closing = true
	for c := range hub.conns {
		c.stop(CloseGoingAway)
	}
	hub.mu.Unlock()
	hub.wg.Wait()
}

// tokenFrom finds the room token: the "token.<jwt>" entry of Sec-WebSocket-Protocol, else
// the token query parameter.
func tokenFrom(r *http.Request) string {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(p), "token."); ok {
				return t
			}
		}
	}
	return r.URL.Query().Get("token")
}

// serveRoomWS is GET /v1/rooms/{room}/ws: it upgrades, checks the token, joins the room and
// runs the connection until it ends. Refusals are WebSocket close codes, so that a browser
// page can tell the reason (an HTTP error before the upgrade would reach it as 1006).
func (h *Handler) serveRoomWS(w http.ResponseWriter, r *http.Request) {
	rc := h.cfg.Rooms
	if !h.hub.enter() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is stopping")
		return
	}
	defer h.hub.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Protocol},
		OriginPatterns: rc.OriginPatterns})
	if err != nil {
		return // Accept answered with an HTTP error
	}
	ws.SetReadLimit(rc.MaxMessageBytes)
	ip := h.clientIP(r)
	if !h.hub.addIP(ip, rc.ConnectionsPerIP) {
		h.refuse(ws, CloseTooManyConn)
		return
	}
	defer h.hub.removeIP(ip)
	token := tokenFrom(r)
	if ws.Subprotocol() != Protocol || token == "" {
		h.refuse(ws, CloseBadRequest)
		return
	}
	t, why := h.ticket(r.PathValue("room"), token)
	if why != nil {
		h.refuse(ws, *why)
		return
	}
	c := newWSConn(h, ws)
	if !h.hub.add(c) {
		h.refuse(ws, CloseGoingAway)
		return
	}
	defer h.hub.remove(c)
	c.run(t)
}

// ticket verifies token for room; a refusal says why not.
func (h *Handler) ticket(room, token string) (Ticket, *CloseReason) {
	claims, err := h.roomToken(token)
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		return Ticket{}, &CloseTokenExpiry
	case errors.Is(err, auth.ErrTokenNotYetValid):
		why := CloseNotYet
		why.Reason = "room opens at " + claims.NotBefore.UTC().Format(time.RFC3339)
		return Ticket{}, &why
	case errors.Is(err, errTokenTooLong):
		why := CloseTokenBad
		why.Reason = tooLongReason
		return Ticket{}, &why
	case err != nil:
		return Ticket{}, &CloseTokenBad
	case claims.Room != room:
		return Ticket{}, &CloseWrongRoom
	}
	return h.ticketOf(claims, token), nil
}

// ticketOf is the ticket of a verified token with its claims.
func (h *Handler) ticketOf(claims auth.RoomClaims, token string) Ticket {
	sum := sha256.Sum256([]byte(token))
	return Ticket{Room: claims.Room, Role: claims.Role, Name: claims.Name, Key: hex.EncodeToString(sum[:]),
		OneVisit: claims.OneVisit, ValidUntil: claims.Expires, MaxGuests: claims.MaxGuests,
		ExistingOnly: h.draining.Load()}
}

// refuse closes a connection that never joined, and counts why.
func (h *Handler) refuse(ws *websocket.Conn, why CloseReason) {
	h.countClose(why)
	h.cfg.Rooms.Logger.Debug("room connection refused", "reason", why.Label)
	_ = ws.Close(websocket.StatusCode(why.Code), why.Reason) // waits for the client's close frame
}

func (h *Handler) countClose(why CloseReason) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.roomCloses.WithLabelValues(why.Label).Inc()
	}
}
