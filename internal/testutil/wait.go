package testutil

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// The pace of Poll: the first retry after pollMin, then twice as long each
// time, up to pollMax.
const (
	pollMin = 5 * time.Millisecond
	pollMax = 100 * time.Millisecond
)

// Poll calls try until it returns nil, ctx ends or timeout passes, and
// returns nil or the last error (saying it ran out of time). It waits on a
// condition, not for a time: the growing pause between calls only paces
// them. It is the one polling loop of the tests; everything else waits on a
// channel, a watch or a fake clock.
func Poll(ctx context.Context, timeout time.Duration, try func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pause := pollMin
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		err := try()
		if err == nil {
			return nil
		}
		t.Reset(pause)
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %v: %w", timeout, err)
		case <-t.C:
		}
		pause = min(2*pause, pollMax)
	}
}

// WaitFor polls cond (see Poll) for up to timeout and fails tb, naming what
// it waited for and cond's last error, if it never returned nil.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := Poll(tb.Context(), timeout, cond); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// CI reports whether the tests run under CI (CI=true), where a test that
// cannot run fails instead of skipping.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test for a missing prerequisite (a binary, root,
// node_modules), or fails it under CI=true, where every prerequisite must be
// there and a skip would hide a test that never ran.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if CI() {
		tb.Fatalf(format+" (CI=true: not skipping)", args...)
	}
	tb.Skipf(format, args...)
}

// Median returns the middle of ds (the upper one of an even count), 0 for
// none: the figure benchmarks report for latencies.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
