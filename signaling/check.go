package signaling

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/signaling/web"
)

// Lifetimes of check links (ferry check-link, POST /v1/check-links).
const (
	DefaultCheckLinkTTL = 24 * time.Hour
	MaxCheckLinkTTL     = 30 * 24 * time.Hour
)

// CheckConfig turns on the connection check for patients' and clinics' IT departments:
// GET /check (the page), GET /v1/check/ice-servers (short-lived TURN credentials for a
// check link's token) and POST /v1/check-links (an API key mints a link).
type CheckConfig struct {
	// Tokens verifies check-link tokens and mints them. Required.
	Tokens *auth.RoomTokens
	// Page serves /check and its assets. Required.
	Page *web.Page
	// PublicURL is the base of links: <base>/check#t=<token>.
	PublicURL string
}

// CheckLink is a link to the check page, as POST /v1/check-links answers and
// `ferry check-link --json` prints.
type CheckLink struct {
	URL       string    `json:"url"`       // <base>/check#t=<token>: the token stays in the fragment
	ExpiresAt time.Time `json:"expiresAt"` // RFC 3339
}

// ErrBadCheckLink wraps every reason NewCheckLink refuses.
var ErrBadCheckLink = errors.New("signaling: bad check link")

// NewCheckLink mints a link to base's check page, valid for ttl (zero: DefaultCheckLinkTTL,
// at most MaxCheckLinkTTL; whole seconds). Errors: ErrBadCheckLink for a ttl out of range.
func NewCheckLink(tokens *auth.RoomTokens, base string, ttl time.Duration, now time.Time) (CheckLink, error) {
	if ttl == 0 {
		ttl = DefaultCheckLinkTTL
	}
	if ttl < time.Minute || ttl > MaxCheckLinkTTL {
		return CheckLink{}, fmt.Errorf("%w: ttl must be 1 minute to %d days", ErrBadCheckLink, MaxCheckLinkTTL/(24*time.Hour))
	}
	exp := now.Add(ttl).Truncate(time.Second)
	tok, err := tokens.MintCheck(exp)
	if err != nil {
		return CheckLink{}, err
	}
	return CheckLink{URL: strings.TrimRight(base, "/") + "/check#t=" + tok, ExpiresAt: exp.UTC()}, nil
}

// checkRoutes mounts the check page and its endpoints.
func (h *Handler) checkRoutes(c *CheckConfig) {
	h.mux.HandleFunc("GET /check", c.Page.ServeCheck)
	h.mux.HandleFunc("GET /v1/check/ice-servers", h.checkICEServers)
	h.mux.HandleFunc("/v1/check-links", h.createCheckLink)
}

// checkICEServers is GET /v1/check/ice-servers with "Authorization: Bearer <check token>":
// an RTCConfiguration with every ICE server URL and TURN credentials that live
// CheckCredentialTTL, for the check page. A missing, malformed or foreign token gets 401
// (code token_invalid), an expired one 401 (token_expired), too many requests for one
// link 429.
func (h *Handler) checkICEServers(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing check token (Authorization: Bearer <token>)")
		return
	}
	switch _, err := h.cfg.Check.Tokens.VerifyCheck(token); {
	case errors.Is(err, auth.ErrTokenExpired):
		writeError(w, http.StatusUnauthorized, "token_expired", "the check link has expired: ask for a new one")
		return
	case err != nil:
		writeError(w, http.StatusUnauthorized, "token_invalid", "invalid check link")
		return
	}
	sum := sha256.Sum256([]byte(token))
	if wait, ok := h.allow("check:" + hex.EncodeToString(sum[:8])); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests for this link")
		return
	}
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	conf, _, err := h.iceConfig("check-"+hex.EncodeToString(b), CheckCredentialTTL, h.relayURLs("", "")) // a cluster's pick, as users get
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot issue credentials")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, conf)
}

// createCheckLink is POST /v1/check-links with an API key and an optional JSON body
// {"ttl": seconds}: 201 with a CheckLink, for an app that hands its users (or their IT
// department) a link to test their network.
func (h *Handler) createCheckLink(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	if !h.authorize(w, r) {
		return
	}
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeBodyError(w, status, err)
		return
	}
	var req struct {
		TTL *ttlParam `json:"ttl"`
	}
	if len(body) > 0 {
		if err := decodeBody(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
	}
	var ttl time.Duration
	if req.TTL != nil {
		secs, err := parseSeconds(string(*req.TTL))
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "ttl must be a positive whole number of seconds")
			return
		}
		ttl = time.Duration(min(secs, int64(MaxCheckLinkTTL/time.Second)+1)) * time.Second
	}
	link, err := NewCheckLink(h.cfg.Check.Tokens, h.cfg.Check.PublicURL, ttl, h.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), ErrBadCheckLink.Error()+": "))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, link)
}
