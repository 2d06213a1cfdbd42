package signaling

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/auth"
)

// MaxScheduleAhead is how far ahead a room's validFrom may lie.
const MaxScheduleAhead = 366 * 24 * time.Hour

// RoomSpec is a room to create: POST /v1/rooms and ferry room create.
type RoomSpec struct {
	ValidFrom  time.Time     // zero: now
	ValidUntil time.Time     // zero: ValidFrom + TTL
	TTL        time.Duration // zero: the default
	HostName   string
	MaxGuests  int
}

// RoomLinks is a created room: its id, validity and the host's and guest's links
// (<base>/r/<room>#t=<token>: the token sits in the fragment, which browsers send to no
// server and put in no Referer).
type RoomLinks struct {
	Room       string    `json:"room"`
	ValidFrom  time.Time `json:"validFrom"`
	ValidUntil time.Time `json:"validUntil"`
	Links      struct {
		Host  string `json:"host"`
		Guest string `json:"guest"`
	} `json:"links"`
}

// LinkPolicy bounds what CreateRoom accepts.
type LinkPolicy struct {
	Base       string        // public URL, e.g. "https://consult.clinic.example"
	DefaultTTL time.Duration // validity when the spec names none
	MaxTTL     time.Duration // longest validity
	MaxGuests  int           // largest maxGuests
}

// ErrBadRoomSpec wraps every reason CreateRoom refuses a spec.
var ErrBadRoomSpec = errors.New("signaling: bad room")

// CreateRoom picks a fresh room id and mints its host and guest tokens (nbf validFrom,
// exp validUntil). Errors: ErrBadRoomSpec (wrapped with the reason) for a spec outside p.
func CreateRoom(tokens *auth.RoomTokens, p LinkPolicy, s RoomSpec, now time.Time) (RoomLinks, error) {
	bad := func(format string, args ...any) (RoomLinks, error) {
		return RoomLinks{}, fmt.Errorf("%w: %s", ErrBadRoomSpec, fmt.Sprintf(format, args...))
	}
	now = now.Truncate(time.Second)
	from := s.ValidFrom.Truncate(time.Second)
	if from.IsZero() || from.Before(now) {
		from = now
	}
	if from.After(now.Add(MaxScheduleAhead)) {
		return bad("validFrom is more than %d days ahead", MaxScheduleAhead/(24*time.Hour))
	}
	until := s.ValidUntil.Truncate(time.Second)
	switch {
	case !until.IsZero() && s.TTL != 0:
		return bad("give validUntil or ttl, not both")
	case s.TTL < 0:
		return bad("ttl must be positive")
	case s.TTL > p.MaxTTL:
		return bad("ttl is above rooms.max_ttl: the room may be open at most %s", p.MaxTTL)
	case until.IsZero():
		until = from.Add(cmpOr(s.TTL, p.DefaultTTL).Round(time.Second))
	}
	if !until.After(from) {
		return bad("validUntil must be after validFrom and now")
	}
	if until.Sub(from) > p.MaxTTL {
		return bad("the room may be open at most %s (rooms.max_ttl)", p.MaxTTL)
	}
	if s.MaxGuests < 0 || s.MaxGuests > p.MaxGuests {
		return bad("maxGuests must be 1-%d", p.MaxGuests)
	}
	if err := auth.ValidateDisplayName(s.HostName); err != nil {
		return bad("hostName: %v", err)
	}
	links := RoomLinks{Room: auth.NewRoomID(), ValidFrom: from, ValidUntil: until}
	claims := auth.RoomClaims{Room: links.Room, Role: auth.RoleHost, Name: s.HostName, MaxGuests: s.MaxGuests,
		NotBefore: from, Expires: until}
	host, err := tokens.Mint(claims)
	if err != nil {
		return RoomLinks{}, err
	}
	claims.Role, claims.Name = auth.RoleGuest, ""
	guest, err := tokens.Mint(claims)
	if err != nil {
		return RoomLinks{}, err
	}
	base := strings.TrimRight(p.Base, "/") + "/r/" + url.PathEscape(links.Room) + "#t="
	links.Links.Host, links.Links.Guest = base+host, base+guest
	return links, nil
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// roomRequest is the body of POST /v1/rooms.
type roomRequest struct {
	ValidFrom  *string   `json:"validFrom"`
	ValidUntil *string   `json:"validUntil"`
	TTL        *ttlParam `json:"ttl"`
	HostName   *string   `json:"hostName"`
	MaxGuests  *int      `json:"maxGuests"`
}

// createRoom is POST /v1/rooms: API key, CORS and rate limits as /v1/ice-servers.
func (h *Handler) createRoom(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	if !h.authorize(w, r) {
		return
	}
	if h.draining.Load() {
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusServiceUnavailable, "draining", "this server is shutting down and takes no new rooms; try another server or again shortly")
		return
	}
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeBodyError(w, status, err)
		return
	}
	var req roomRequest
	if len(body) > 0 {
		if err := decodeBody(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
	}
	spec, err := req.spec()
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	rc := h.cfg.Rooms
	links, err := CreateRoom(rc.Tokens, LinkPolicy{Base: rc.PublicURL, DefaultTTL: rc.DefaultTTL,
		MaxTTL: rc.MaxTTL, MaxGuests: rc.MaxGuests}, spec, h.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), ErrBadRoomSpec.Error()+": "))
		return
	}
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.roomsCreated.Inc()
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, links)
}

func (q roomRequest) spec() (RoomSpec, error) {
	var s RoomSpec
	for _, f := range []struct {
		name string
		in   *string
		out  *time.Time
	}{{"validFrom", q.ValidFrom, &s.ValidFrom}, {"validUntil", q.ValidUntil, &s.ValidUntil}} {
		if f.in == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339, *f.in)
		if err != nil {
			return s, fmt.Errorf("%s must be an RFC 3339 time like 2026-11-29T14:00:00Z", f.name)
		}
		*f.out = t
	}
	if q.TTL != nil {
		secs, err := parseSeconds(string(*q.TTL))
		if err != nil {
			return s, errors.New("ttl must be a positive whole number of seconds")
		}
		s.TTL = time.Duration(min(secs, int64(math.MaxInt64/time.Second))) * time.Second // no overflow: CreateRoom refuses it
	}
	if q.HostName != nil {
		s.HostName = *q.HostName
	}
	if q.MaxGuests != nil {
		if *q.MaxGuests < 1 {
			return s, errors.New("maxGuests must be at least 1")
		}
		s.MaxGuests = *q.MaxGuests
	}
	return s, nil
}
