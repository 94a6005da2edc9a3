package testutil

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
)

// Clock is the fake clock of every test: its time moves only when the test
// sets or advances it, and the waits it hands out (After) fire when it
// passes their deadlines. It implements mc.TimerClock; the zero value is not
// ready to use, NewClock is.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	waits   []time.Duration
	auto    bool
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

var _ mc.TimerClock = (*Clock)(nil)

// NewClock returns a fake clock that reads t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the clock's time once the clock has
// been advanced by d; at once when d <= 0, or when the clock advances by
// itself (see AutoAdvance).
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	if c.auto && d > 0 {
		c.now = c.now.Add(d)
	}
	if d <= 0 || c.auto {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock forward by d and fires the waits that are due.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (forward or back) and fires the waits that are due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(t) {
			kept = append(kept, w)
			continue
		}
		w.ch <- t
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// AutoAdvance makes every later After move the clock forward by its
// duration at once and fire: for code that waits between retries, where the
// test checks the waits asked for (Waits), not their passing.
func (c *Clock) AutoAdvance() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.auto = true
}

// Waits returns the durations After was called with, in order.
func (c *Clock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

// Waiters returns how many waits have not fired yet.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// WaitForWaiters waits (see WaitFor, up to 10 s) until n waits are pending:
// the code under test has reached the point where it waits on the clock, so
// that advancing the clock now fires what the test means to fire.
func (c *Clock) WaitForWaiters(tb testing.TB, n int) {
	tb.Helper()
	WaitFor(tb, 10*time.Second, fmt.Sprintf("%d waits on the fake clock", n), func() error {
		if got := c.Waiters(); got != n {
			return fmt.Errorf("%d waits", got)
		}
		return nil
	})
}
