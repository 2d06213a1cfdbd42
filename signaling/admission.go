package signaling

import (
	"context"
	"errors"
	"net/http"
)

// admissionAnswer maps a Rooms.Admissible error onto the HTTP answer of the connection
// test's ICE servers: the same refusals as the WebSocket's close codes, as status, error
// code (the close code's label) and message.
func admissionAnswer(err error) (status int, code, msg string) {
	var ref *Refusal
	switch {
	case errors.As(err, &ref) && ref.Close.Code == CloseDenied.Code:
		return http.StatusForbidden, CloseDenied.Label, "the host denied this link: it may not enter the room again (WebSocket close 4406)"
	case errors.As(err, &ref) && ref.Close.Code == CloseLinkUsed.Code:
		return http.StatusForbidden, CloseLinkUsed.Label, "this one-visit link has already been used (WebSocket close 4411)"
	case errors.As(err, &ref) && ref.Close.Code == CloseEnded.Code:
		return http.StatusGone, CloseEnded.Label, "the room has ended (WebSocket close 4410)"
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, ErrCodeUnavailable, "the rooms store cannot be reached; try again shortly"
	}
	return http.StatusServiceUnavailable, ErrCodeUnavailable, "the room cannot be checked now; try again shortly"
}
