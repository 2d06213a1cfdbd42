package signaling

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling/web"
)

// CheckCredentialTTL is the lifetime of the TURN credentials that
// GET /v1/rooms/{room}/ice-servers hands a page for its connection test.
const CheckCredentialTTL = 10 * time.Minute

// pageRoutes mounts the consultation page (GET /r/{room}; NewHandler mounts its assets) and
// the connection test's ICE servers (GET /v1/rooms/{room}/ice-servers).
func (h *Handler) pageRoutes(p *web.Page) {
	h.mux.HandleFunc("GET /v1/rooms/{room}/ice-servers", h.roomICEServers)
	if p == nil {
		return
	}
	h.mux.HandleFunc("GET /r/{room}", func(w http.ResponseWriter, r *http.Request) {
		if !auth.ValidRoomID(r.PathValue("room")) {
			writeError(w, http.StatusNotFound, "not_found", "no such room link")
			return
		}
		p.ServeRoom(w, r)
	})
}

// page returns the page whose assets are served: the consultation page's, or the check
// page's; nil when neither is on.
func (h *Handler) page() *web.Page {
	if h.cfg.Rooms != nil && h.cfg.Rooms.Page != nil {
		return h.cfg.Rooms.Page
	}
	if h.cfg.Check != nil {
		return h.cfg.Check.Page
	}
	return nil
}

// roomICEServers is GET /v1/rooms/{room}/ice-servers with "Authorization: Bearer <room
// token>": short-lived TURN credentials (CheckCredentialTTL) so that a page can test,
// before it joins, whether a relayed call works from its network. A token for a room that
// opens later is accepted (patients test ahead of the appointment); an expired one, one for
// another room or a malformed one gets 401/403; one the room refuses (Rooms.Admissible:
// denied, a used one-visit link, an ended room) gets 403/410 with the close code's label,
// as the WebSocket would close. Same shape as the welcome's ICE servers.
func (h *Handler) roomICEServers(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing room token (Authorization: Bearer <token>)")
		return
	}
	claims, err := h.roomToken(token)
	switch {
	case errors.Is(err, auth.ErrTokenNotYetValid): // claims are filled in
	case errors.Is(err, auth.ErrTokenExpired):
		writeError(w, http.StatusUnauthorized, "token_expired", "the room link has expired")
		return
	case errors.Is(err, errTokenTooLong):
		writeError(w, http.StatusUnauthorized, "token_invalid", "invalid room token: "+strings.TrimPrefix(err.Error(), errTokenTooLong.Error()+": "))
		return
	case err != nil:
		writeError(w, http.StatusUnauthorized, "token_invalid", "invalid room token")
		return
	}
	if claims.Room != r.PathValue("room") {
		writeError(w, http.StatusForbidden, "wrong_room", "the token is for another room")
		return
	}
	sum := sha256.Sum256([]byte(token))
	if wait, ok := h.allow("room:" + hex.EncodeToString(sum[:8])); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests for this link")
		return
	}
	if err := h.cfg.Rooms.Rooms.Admissible(r.Context(), h.ticketOf(claims, token)); err != nil {
		status, code, msg := admissionAnswer(err)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "5")
		}
		writeError(w, status, code, msg)
		return
	}
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	servers, cred, err := h.iceConfig("check-"+hex.EncodeToString(b), min(CheckCredentialTTL, h.cfg.Rooms.CredentialTTL), h.cfg.URLs)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot issue credentials")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, iceServersWire{Type: TypeICEServers, ICEServers: servers.ICEServers,
		ICEServersExpireAt: cred.Expires.UTC().Format(time.RFC3339)})
}
