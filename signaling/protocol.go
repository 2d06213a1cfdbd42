package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferryrelay/ferry/auth"
)

// Protocol is the WebSocket subprotocol of rooms; the client offers it in
// Sec-WebSocket-Protocol (with "token.<jwt>") and Ferry selects it.
const Protocol = "ferry.v1"

// Message types of ferry.v1 (README, "Rooms"). Relayed types go from one admitted
// participant to another, addressed with "to", and arrive with "from" and "seq".
const (
	TypePing      = "ping"
	TypePong      = "pong"
	TypeOffer     = "offer"
	TypeAnswer    = "answer"
	TypeCandidate = "candidate"
	TypeRestart   = "restart"
	TypeBye       = "bye"
	TypeAdmit     = "admit"
	TypeDeny      = "deny"
	TypeReturn    = "return"
	TypeEnd       = "end"
	TypeName      = "name"

	TypeWelcome         = "welcome"
	TypeAdmitted        = "admitted"
	TypeReturned        = "returned"
	TypeDenied          = "denied"
	TypeEnded           = "ended"
	TypeKnock           = "knock"
	TypePeerJoined      = "peer-joined"
	TypePeerLeft        = "peer-left"
	TypePeerReconnected = "peer-reconnected"
	TypePeerName        = "peer-name"
	TypeICEServers      = "ice-servers"
	TypeError           = "error"

	// typeRelayed marks an Event carrying an encoded relayed message.
	typeRelayed = "relayed"
	// EventRelayed is the Event.Type of a relayed message (Seq and Data, see RelayedEvent):
	// Rooms implementations deliver it again as it was after a reconnect.
	EventRelayed = typeRelayed
)

// relayed reports whether a client message type is relayed to another participant.
func relayed(t string) bool {
	switch t {
	case TypeOffer, TypeAnswer, TypeCandidate, TypeRestart, TypeBye:
		return true
	}
	return false
}

// inbound is a decoded client message. Fields a type does not use are ignored, and unknown
// fields are dropped: Ferry re-encodes what it forwards.
type inbound struct {
	Type      string          `json:"type"`
	To        string          `json:"to"`
	ID        string          `json:"id"`
	SDP       *string         `json:"sdp"`
	Candidate json.RawMessage `json:"candidate"`
	Name      *string         `json:"name"`
}

// errBadMessage wraps every decoding failure; its text never echoes the message.
var errBadMessage = errors.New("bad message")

// decodeMessage parses one ferry.v1 text message and checks its shape (never its content):
// a JSON object with a known "type"; "to" (a participant id) on relayed types; "id" on
// admit, deny and return; a non-empty string "sdp" on offer and answer; an object or null
// "candidate" on candidate; a valid display name on name.
func decodeMessage(data []byte) (inbound, error) {
	var m inbound
	if err := json.Unmarshal(data, &m); err != nil {
		return inbound{}, fmt.Errorf("%w: %s", errBadMessage, jsonProblem(err)) // a field of the wrong type says which
	}
	bad := func(why string) (inbound, error) { return inbound{}, fmt.Errorf("%w: %s", errBadMessage, why) }
	switch m.Type {
	case TypePing, TypeEnd:
	case TypeOffer, TypeAnswer:
		if m.SDP == nil || *m.SDP == "" {
			return bad(m.Type + " needs a non-empty string sdp")
		}
	case TypeCandidate:
		c := bytes.TrimSpace(m.Candidate)
		if len(c) == 0 || c[0] != '{' && !bytes.Equal(c, []byte("null")) {
			return bad("candidate needs a candidate object (or null)")
		}
	case TypeRestart, TypeBye:
	case TypeAdmit, TypeDeny, TypeReturn:
		if !validPeerID(m.ID) {
			return bad(m.Type + " needs the id of a participant")
		}
	case TypeName:
		if m.Name == nil {
			return bad("name needs a name")
		}
		if err := auth.ValidateDisplayName(*m.Name); err != nil {
			return bad("name: " + err.Error())
		}
	case "":
		return bad("no type")
	default:
		return bad("unknown type")
	}
	if relayed(m.Type) && !validPeerID(m.To) {
		return bad(m.Type + " needs to: the id of a participant")
	}
	return m, nil
}

// maxPeerIDLen bounds a participant id in a message.
const maxPeerIDLen = 32

// validPeerID reports whether id can be a participant id: 1-32 characters of [A-Za-z0-9_-].
func validPeerID(id string) bool {
	if id == "" || len(id) > maxPeerIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// Relayed is the content of a relayed message, checked for shape only.
type Relayed struct {
	Type      string          // TypeOffer, TypeAnswer, TypeCandidate, TypeRestart or TypeBye
	SDP       string          // offer, answer
	Candidate json.RawMessage // candidate: an RTCIceCandidateInit object or null
}

type relayedWire struct {
	Type      string          `json:"type"`
	From      string          `json:"from"`
	Seq       uint64          `json:"seq"`
	SDP       string          `json:"sdp,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
}

// encodeRelayed renders a relayed message as the addressee receives it.
func encodeRelayed(from string, seq uint64, m Relayed) ([]byte, error) {
	w := relayedWire{Type: m.Type, From: from, Seq: seq, SDP: m.SDP, Candidate: m.Candidate}
	if m.Type == TypeCandidate && len(bytes.TrimSpace(m.Candidate)) == 0 {
		w.Candidate = json.RawMessage("null")
	}
	return json.Marshal(w)
}

// PeerInfo describes a participant to others. Name is attacker-controlled text: pages show
// it as text only.
type PeerInfo struct {
	ID   string `json:"id"`
	Role string `json:"role"`
	Name string `json:"name,omitempty"`
}

type welcomeWire struct {
	Type               string      `json:"type"`
	Protocol           string      `json:"protocol"`
	You                string      `json:"you"`
	Role               string      `json:"role"`
	Name               string      `json:"name,omitempty"`
	State              string      `json:"state"`
	Reconnected        bool        `json:"reconnected"`
	Peers              []PeerInfo  `json:"peers"`
	ICEServers         []ICEServer `json:"iceServers,omitempty"`
	ICEServersExpireAt string      `json:"iceServersExpireAt,omitempty"`
	ValidUntil         string      `json:"validUntil"`
	MaxMessageBytes    int64       `json:"maxMessageBytes"`
}

type admittedWire struct {
	Type               string      `json:"type"`
	Peers              []PeerInfo  `json:"peers"`
	ICEServers         []ICEServer `json:"iceServers"`
	ICEServersExpireAt string      `json:"iceServersExpireAt"`
}

type iceServersWire struct {
	Type               string      `json:"type"`
	ICEServers         []ICEServer `json:"iceServers"`
	ICEServersExpireAt string      `json:"iceServersExpireAt"`
}

type peerWire struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Role   string `json:"role,omitempty"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason,omitempty"`
}

type errorWire struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Ref     string `json:"ref,omitempty"`
	To      string `json:"to,omitempty"`
}

// Participant states in welcome.
const (
	StateAdmitted = "admitted"
	StateWaiting  = "waiting"
)

// Reasons in peer-left.
const (
	LeftClosed   = "left"     // closed the connection (WebSocket close 1000)
	LeftTimeout  = "timeout"  // did not come back within rooms.reconnect_grace
	LeftReturned = "returned" // sent back to the waiting room by a host
	LeftDenied   = "denied"   // denied (or removed) by a host
)

// Error codes in error messages (a message was refused; the connection stays open).
const (
	ErrCodeBadMessage    = "bad_message"   // not ferry.v1: see message
	ErrCodeNotAdmitted   = "not_admitted"  // the sender is waiting: nothing is relayed
	ErrCodeNoSuchPeer    = "no_such_peer"  // "to"/"id" names no admitted participant
	ErrCodeNotAllowed    = "not_allowed"   // admit/deny/return/end need the host role
	ErrCodeRoomFull      = "room_full"     // admit: no room for another participant
	ErrCodeUndeliverable = "undeliverable" // the addressee is reconnecting and its buffer is full
	ErrCodeUnavailable   = "unavailable"   // the rooms' shared store (a cluster's Redis) cannot be reached: try again
	ErrCodeNotText       = "not_text"      // a binary message
)

// CloseReason is how Ferry ends a room connection: a WebSocket close code (RFC 6455 §7.4;
// 4000-4999 are Ferry's own) with a short reason text, and a metrics label.
type CloseReason struct {
	Code   int
	Reason string
	Label  string
}

// The close codes of ferry.v1 (README, "Close codes").
var (
	CloseGoingAway   = CloseReason{1001, "server shutting down", "shutdown"}
	CloseBadRequest  = CloseReason{4400, "no token or not ferry.v1", "bad_request"}
	CloseTokenBad    = CloseReason{4401, "invalid token", "token_invalid"}
	CloseTokenExpiry = CloseReason{4402, "token expired", "token_expired"}
	CloseWrongRoom   = CloseReason{4403, "token is for another room", "wrong_room"}
	CloseNotYet      = CloseReason{4404, "room not open yet", "not_yet_valid"}
	CloseDenied      = CloseReason{4406, "denied by the host", "denied"}
	CloseIdle        = CloseReason{4408, "idle timeout", "idle_timeout"}
	CloseReplaced    = CloseReason{4409, "the same link connected again", "replaced"}
	CloseEnded       = CloseReason{4410, "room ended", "ended"}
	CloseLinkUsed    = CloseReason{4411, "one-visit link already used", "link_used"}
	CloseRoomFull    = CloseReason{4413, "room full", "room_full"}
	CloseRateLimited = CloseReason{4429, "too many messages", "rate_limited"}
	CloseTooManyConn = CloseReason{4430, "too many connections from this address", "too_many_connections"}
	CloseServerFull  = CloseReason{4503, "too many rooms on this server", "server_full"}
	CloseTooSlow     = CloseReason{4507, "not reading fast enough", "too_slow"}
	// CloseDraining (1013, RFC 6455's "Try Again Later") refuses a room this server does
	// not hold while it drains; rooms it holds go on.
	CloseDraining = CloseReason{1013, "server draining: no new rooms", "draining"}
	// Not sent by Ferry, counted only: the client closed, its pings went unanswered, or a
	// message exceeded rooms.limits.message_bytes (coder/websocket sends 1009 itself).
	closeClient   = CloseReason{1000, "", "client"}
	closeDead     = CloseReason{1006, "", "ping_timeout"}
	closeTooLarge = CloseReason{1009, "", "message_too_big"}
)

// closeLabels are the metric label values of every close reason.
var closeLabels = []string{"shutdown", "bad_request", "token_invalid", "token_expired", "wrong_room",
	"not_yet_valid", "denied", "idle_timeout", "replaced", "ended", "link_used", "room_full",
	"rate_limited", "too_many_connections", "server_full", "too_slow", "client", "ping_timeout",
	"message_too_big", "draining"}

// RelayedEvent returns the Event that delivers m, from participant from, to its addressee as
// the seq-th message relayed to it: for Rooms implementations outside this package.
func RelayedEvent(from string, seq uint64, m Relayed) (Event, error) {
	data, err := encodeRelayed(from, seq, m)
	if err != nil {
		return Event{}, err
	}
	return Event{Type: typeRelayed, Seq: seq, Data: data}, nil
}
