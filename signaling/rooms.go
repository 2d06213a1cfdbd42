package signaling

import (
	"context"
	"errors"
	"time"
)

// Rooms holds consultation rooms: who is in which room, admission, and delivery to
// participants. The WebSocket code uses nothing else, so rooms can live in memory
// (MemoryRooms, the default) or, later, in a store shared by several signaling instances.
// A room exists from the first join of a valid token (tokens are minted offline too), so
// there is no separate create.
type Rooms interface {
	// Join puts the ticket's holder into its room, delivering to c first a welcome event,
	// then (for a host) a knock per waiting guest, then (after a reconnect) the relayed
	// messages not confirmed as received. A ticket whose participant is still in the room,
	// connected or within the reconnect grace, takes over that place: same id, same state;
	// the old connection is closed with CloseReplaced. Errors are *Refusal.
	Join(ctx context.Context, t Ticket, c Conn) (Session, error)
	// Admissible says whether Join would let the ticket's link in as far as the room's
	// state goes, joining nothing: a *Refusal with CloseEnded (the room was ended),
	// CloseDenied (a host denied this link) or CloseLinkUsed (a one-visit link whose
	// participant has gone); nil otherwise, also for a room not held now and for a link
	// whose participant is still in the room (Join would let it take its place over).
	// ErrUnavailable when the rooms' shared store cannot be reached. Room size is not
	// checked: a full room has place again later.
	Admissible(ctx context.Context, t Ticket) error
	// Close ends every room without notifying anyone and stops every timer.
	Close() error
}

// Session is one connection's membership in a room. Calls from a connection that has
// been taken over are refused with ErrStale, or ignored (Confirm, Leave).
type Session interface {
	// Relay sends m to the admitted participant to, from this admitted participant.
	// Errors: ErrNotAdmitted, ErrNoSuchPeer, ErrUndeliverable.
	Relay(ctx context.Context, to string, m Relayed) error
	// Admit, Deny and Return act on guest id (hosts only). Admit needs the guest waiting
	// and room for one more; Deny removes a waiting or admitted guest for good (its link
	// is refused in this room from then on); Return sends an admitted guest back to the
	// waiting room. Errors: ErrNotAllowed, ErrNoSuchPeer, ErrRoomFull.
	Admit(ctx context.Context, id string) error
	Deny(ctx context.Context, id string) error
	Return(ctx context.Context, id string) error
	// SetName sets the display name of a participant whose token names none.
	// Errors: ErrNotAllowed.
	SetName(ctx context.Context, name string) error
	// End ends the room for everyone (hosts only). Errors: ErrNotAllowed.
	End(ctx context.Context) error
	// Confirm says that the client has received every relayed message up to seq.
	Confirm(seq uint64)
	// Leave says the connection is gone. left means the client said goodbye (close 1000):
	// it leaves at once; otherwise its place is kept for the reconnect grace.
	Leave(left bool)
}

// Conn is a room's handle on one client connection.
type Conn interface {
	// Deliver queues ev for the client in order; it never blocks (a connection that cannot
	// keep up closes itself with CloseTooSlow).
	Deliver(ev Event)
}

// Event is something for a client: a room event, a relayed message (Data with its Seq),
// and, when Close is set, the end of the connection after it.
type Event struct {
	Type   string     // a server message type, or "" for a close only
	Peer   PeerInfo   // peer-joined, peer-left, peer-reconnected, peer-name, knock
	Reason string     // peer-left: LeftClosed, LeftTimeout, LeftReturned, LeftDenied
	Seq    uint64     // relayed messages: the addressee's sequence number
	Data   []byte     // relayed messages, encoded
	Joined *Joined    // welcome
	Peers  []PeerInfo // admitted
	Close  *CloseReason
}

// Joined is what a welcome says.
type Joined struct {
	ID          string
	Role        string
	Name        string
	Waiting     bool
	Reconnected bool
	Peers       []PeerInfo // admitted participants other than this one; none while waiting
	ValidUntil  time.Time
}

// Ticket is a verified room token: who joins which room.
type Ticket struct {
	Room string
	Role string // auth.RoleHost or auth.RoleGuest
	Name string
	// Key identifies the link (a hash of the token): the same key takes over its place.
	Key string
	// OneVisit is the token's jti: the link admits one participant, once.
	OneVisit   string
	ValidUntil time.Time
	MaxGuests  int
	// ExistingOnly joins only a room that is held now: the server drains and starts no
	// room (Refusal with CloseDraining).
	ExistingOnly bool
}

// Refusal is why a join was refused, with the close code that says so.
type Refusal struct{ Close CloseReason }

func (r *Refusal) Error() string { return "signaling: join refused: " + r.Close.Reason }

// Errors of Session methods, answered with an error message of the matching code.
var (
	ErrNotAdmitted   = errors.New("signaling: not admitted")
	ErrNoSuchPeer    = errors.New("signaling: no such participant")
	ErrNotAllowed    = errors.New("signaling: not allowed for this role")
	ErrRoomFull      = errors.New("signaling: room full")
	ErrUndeliverable = errors.New("signaling: addressee's buffer is full")
	ErrStale         = errors.New("signaling: connection was taken over")
	// ErrUnavailable: the change needs the rooms' shared store (a cluster's Redis), which
	// cannot be reached now; nothing happened.
	ErrUnavailable = errors.New("signaling: rooms store unavailable")
)

// errorCode maps a Session error to the code of an error message.
func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrNotAdmitted):
		return ErrCodeNotAdmitted
	case errors.Is(err, ErrNoSuchPeer):
		return ErrCodeNoSuchPeer
	case errors.Is(err, ErrNotAllowed):
		return ErrCodeNotAllowed
	case errors.Is(err, ErrRoomFull):
		return ErrCodeRoomFull
	case errors.Is(err, ErrUndeliverable):
		return ErrCodeUndeliverable
	case errors.Is(err, ErrUnavailable):
		return ErrCodeUnavailable
	}
	return ErrCodeBadMessage
}
