package testutil_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/testutil"
)

func TestPoll(t *testing.T) {
	t.Parallel()
	n := 0
	err := testutil.Poll(t.Context(), time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Errorf("Poll = %v after %d calls, want nil after 3", err, n)
	}

	errNever := errors.New("never")
	err = testutil.Poll(t.Context(), 20*time.Millisecond, func() error { return errNever })
	if !errors.Is(err, errNever) || !strings.Contains(err.Error(), "not within 20ms") {
		t.Errorf("Poll of a condition that never holds = %v, want the last error and the timeout", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := testutil.Poll(ctx, time.Hour, func() error { return errNever }); !errors.Is(err, errNever) {
		t.Errorf("Poll with an ended context = %v, want the last error at once", err)
	}
}

func TestWaitForFails(t *testing.T) {
	t.Parallel()
	tb := fatalTB{TB: t, msg: make(chan string, 1)}
	go testutil.WaitFor(tb, 10*time.Millisecond, "the moon", func() error { return errors.New("still dark") })
	if msg := <-tb.msg; !strings.Contains(msg, "the moon") || !strings.Contains(msg, "still dark") {
		t.Errorf("WaitFor failed with %q, want what it waited for and the last error", msg)
	}
}

// skipTB records whether a test skipped or failed.
type skipTB struct {
	testing.TB
	got chan string
}

func (s skipTB) Helper() {}

func (s skipTB) Fatalf(format string, args ...any) {
	s.got <- "fatal"
	runtime.Goexit()
}

func (s skipTB) Skipf(format string, args ...any) {
	s.got <- "skip"
	runtime.Goexit()
}

func TestSkipOrFail(t *testing.T) {
	for _, tt := range []struct{ ci, want string }{{"true", "fatal"}, {"", "skip"}, {"1", "skip"}} {
		t.Setenv("CI", tt.ci)
		tb := skipTB{TB: t, got: make(chan string, 1)}
		go testutil.SkipOrFail(tb, "no %s", "Xvnc")
		if got := <-tb.got; got != tt.want {
			t.Errorf("CI=%q: %s, want %s", tt.ci, got, tt.want)
		}
	}
}

func TestClock(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	c := testutil.NewClock(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want %v", got, t0)
	}
	now := c.After(0)
	soon, later := c.After(time.Minute), c.After(time.Hour)
	if got := <-now; !got.Equal(t0) {
		t.Errorf("After(0) sent %v, want %v at once", got, t0)
	}
	c.WaitForWaiters(t, 2)
	c.Advance(59 * time.Second)
	select {
	case <-soon:
		t.Fatal("a wait of a minute fired after 59 s")
	default:
	}
	c.Advance(time.Second)
	if got := <-soon; !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("the minute's wait sent %v, want %v", got, t0.Add(time.Minute))
	}
	if n := c.Waiters(); n != 1 {
		t.Errorf("Waiters = %d after one fired, want 1", n)
	}
	c.Set(t0.Add(2 * time.Hour))
	if got := <-later; !got.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("the hour's wait sent %v, want %v", got, t0.Add(2*time.Hour))
	}
	if n := c.Waiters(); n != 0 {
		t.Errorf("Waiters = %d, want 0", n)
	}
}
