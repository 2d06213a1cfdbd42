package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// iceServers is GET/POST /v1/ice-servers: with an API key, fresh TURN credentials and the
// ICE servers to use them with, as an RTCConfiguration (default), the TURN REST draft's
// shape (format=rest) or the bare iceServers array (format=array). Parameters come from the
// query string or a JSON body (iceRequest); every bad one gets 400 with a clear message.
func (h *Handler) iceServers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET or POST")
		return
	}
	r, problem := fromDraft(r) // the TURN REST draft's form (turnrest.go)
	if problem != "" {
		writeError(w, http.StatusBadRequest, "bad_request", problem)
		return
	}
	if !h.authorize(w, r) {
		return
	}
	req, status, err := h.parse(w, r)
	if err != nil {
		writeBodyError(w, status, err)
		return
	}
	p, problem := h.iceParams(req)
	if problem != "" {
		writeError(w, http.StatusBadRequest, "bad_request", problem)
		return
	}
	_, turn := splitURLs(p.urls)
	if len(turn) == 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "no running TURN listener matches the requested transports")
		return
	}
	conf, cred, err := h.iceConfig(p.user, p.ttl, p.urls)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot issue credentials")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	conf.ICETransportPolicy = p.policy
	switch r.URL.Query().Get("format") {
	case "", "rtcconfiguration":
		writeJSON(w, http.StatusOK, conf)
	case "array":
		writeJSON(w, http.StatusOK, conf.ICEServers)
	case "rest":
		writeJSON(w, http.StatusOK, restResponse{Username: cred.Username, Password: cred.Password,
			TTL: conf.TTL, URIs: urlStrings(turn)})
	default:
		writeError(w, http.StatusBadRequest, "bad_request", `format must be "rest" or "array" (or absent)`)
	}
}

// iceParams are an ICE-servers request's parameters, checked.
type iceParams struct {
	ttl    time.Duration // capped at the authenticator's MaxTTL
	user   string        // the user id for the credential; random when not given
	policy string        // iceTransportPolicy to echo: "", "all" or "relay"
	urls   []URL         // the relay's URLs (the region's, with a registry), of the transports asked for
}

// iceParams checks req and returns its parameters, or the problem to answer with 400.
func (h *Handler) iceParams(req iceRequest) (iceParams, string) {
	p := iceParams{ttl: h.cfg.DefaultTTL}
	if req.TTL != nil {
		secs, err := parseSeconds(string(*req.TTL))
		if err != nil {
			return p, "ttl must be a positive whole number of seconds"
		}
		p.ttl = time.Duration(min(secs, int64(h.cfg.Auth.MaxTTL()/time.Second))) * time.Second
	}
	p.ttl = min(p.ttl, h.cfg.Auth.MaxTTL())
	if req.User != nil {
		p.user = *req.User
		if err := auth.ValidateUserID(p.user); err != nil {
			return p, "user: " + strings.TrimPrefix(err.Error(), "auth: ")
		}
	} else {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		p.user = hex.EncodeToString(b)
	}
	if req.ICETransportPolicy != nil {
		p.policy = *req.ICETransportPolicy
		if p.policy != "all" && p.policy != "relay" {
			return p, `iceTransportPolicy must be "all" or "relay"`
		}
	}
	region := ""
	if req.Region != nil {
		region = *req.Region
		if !validRegion(region) {
			return p, "region must be 1-64 characters of A-Z a-z 0-9 . _ -"
		}
	}
	p.urls = h.relayURLs(region, "")
	if len(req.Transports) > 0 {
		want := map[string]bool{}
		for _, t := range req.Transports {
			t = strings.ToLower(strings.TrimSpace(t))
			if t != TransportUDP && t != TransportTCP && t != TransportTLS {
				return p, fmt.Sprintf("unknown transport %q (udp, tcp, tls)", t)
			}
			want[t] = true
		}
		p.urls = slices.DeleteFunc(slices.Clone(p.urls), func(u URL) bool {
			return u.Scheme != "stun" && !want[u.Transport]
		})
	}
	return p, ""
}
