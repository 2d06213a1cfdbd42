package signaling

import "time"

// Clock tells time and runs functions later: the real clock in production, a fake one in
// tests so that lifetimes (grace periods, credential refresh, room ends) need no sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d; stop cancels it and reports whether
	// it did so before f started (time.AfterFunc semantics).
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}
