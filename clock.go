package mc

import "time"

// Clock is injected wherever time matters, so tests can use a fake one.
type Clock interface {
	Now() time.Time
}

// TimerClock is a Clock that can also wait on its own time, so that a fake
// clock drives the timers of the code that uses it (the session manager's
// idle timeout and maximum lifetime) instead of the test waiting for them.
type TimerClock interface {
	Clock
	// After returns a channel that receives the clock's time once d has
	// passed on the clock.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

var _ TimerClock = SystemClock{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
