package storekit_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

// table is a one-session store whose reads the test can hold up.
type table struct {
	mu   sync.Mutex
	s    *mc.Session
	hold chan struct{} // when set, the next read takes its value, then waits for it to close
}

func (d *table) set(state mc.State, version int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.s = &mc.Session{ID: "s1", State: state, Version: version}
}

func (d *table) fetch(ctx context.Context, id string) (*mc.Session, error) {
	d.mu.Lock()
	if d.s == nil || d.s.ID != id {
		d.mu.Unlock()
		return nil, storekit.NotFound(id)
	}
	c := *d.s // the read starts here: a change after this is not in it
	hold := d.hold
	d.hold = nil
	d.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &c, nil
}

// start returns a Hub over a table holding session s1 in state at version
// (no session when state is empty).
func start(tb testing.TB, state mc.State, version int64) (*table, *storekit.Hub) {
	tb.Helper()
	db := &table{}
	if state != "" {
		db.set(state, version)
	}
	h := storekit.NewHub(db.fetch, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tb.Cleanup(h.Close)
	return db, h
}

// change stores a new value of s1, announces it and waits until the Hub
// has delivered it. It must run inside a synctest bubble.
func change(db *table, h *storekit.Hub, state mc.State, version int64) {
	db.set(state, version)
	h.Notify("s1")
	synctest.Wait()
}

// watch watches s1 and fails the test if it cannot.
func watch(tb testing.TB, ctx context.Context, h *storekit.Hub) <-chan *mc.Session {
	tb.Helper()
	ch, err := h.Watch(ctx, "s1")
	if err != nil {
		tb.Fatalf("Watch: %v", err)
	}
	return ch
}

// peek reports what ch holds now, without waiting: "value" (returned),
// "empty" (open, nothing waiting) or "closed".
func peek(ch <-chan *mc.Session) (*mc.Session, string) {
	select {
	case s, ok := <-ch:
		if !ok {
			return nil, "closed"
		}
		return s, "value"
	default:
		return nil, "empty"
	}
}

// take returns the value waiting in ch, or fails if there is none.
func take(tb testing.TB, ch <-chan *mc.Session) *mc.Session {
	tb.Helper()
	s, got := peek(ch)
	if got != "value" {
		tb.Fatalf("got %s channel, want a value", got)
	}
	return s
}

// expect fails unless ch is in state want ("empty" or "closed").
func expect(tb testing.TB, ch <-chan *mc.Session, want string) {
	tb.Helper()
	if s, got := peek(ch); got != want {
		if s != nil {
			got += " " + string(s.State)
		}
		tb.Fatalf("got %s, want %s channel", got, want)
	}
}

func TestHubKeepsNewestValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, h := start(t, mc.StatePending, 1)
		ch := watch(t, t.Context(), h)
		if got := take(t, ch); got.Version != 1 {
			t.Fatalf("got version %d, want 1", got.Version)
		}

		// Two changes the watcher does not take in between: it sees only the newest.
		change(db, h, mc.StateStarting, 2)
		change(db, h, mc.StateReady, 3)
		if got := take(t, ch); got.Version != 3 || got.State != mc.StateReady {
			t.Fatalf("got %s v%d, want ready v3", got.State, got.Version)
		}
		expect(t, ch, "empty")

		// An announcement without a change sends nothing again.
		h.Notify("s1")
		synctest.Wait()
		expect(t, ch, "empty")

		// The watcher gets its own copy: changing it changes nothing stored.
		change(db, h, mc.StateCapturing, 4)
		take(t, ch).State = mc.StateFailed
		if got, _ := db.fetch(t.Context(), "s1"); got.State != mc.StateCapturing {
			t.Fatalf("stored state changed to %s, want capturing", got.State)
		}
	})
}

func TestHubClosesAfterFinalState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, h := start(t, mc.StateReady, 3)
		ch := watch(t, t.Context(), h)
		change(db, h, mc.StateCompleted, 4)
		// The final value stays readable before the close.
		if got := take(t, ch); got.State != mc.StateCompleted || got.Version != 4 {
			t.Fatalf("got %s v%d, want completed v4", got.State, got.Version)
		}
		expect(t, ch, "closed")

		// Watching a session that has already ended: one value, then closed.
		ch = watch(t, t.Context(), h)
		if got := take(t, ch); got.State != mc.StateCompleted {
			t.Fatalf("got %s, want completed", got.State)
		}
		expect(t, ch, "closed")
	})
}

// TestHubNoStaleOverwrite: the first read of Watch starts before a change
// but ends after the read that the change's announcement started; the
// older value must not replace the newer one.
func TestHubNoStaleOverwrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, h := start(t, mc.StatePending, 1)
		release := make(chan struct{})
		db.hold = release

		type result struct {
			ch  <-chan *mc.Session
			err error
		}
		done := make(chan result, 1)
		go func() {
			ch, err := h.Watch(t.Context(), "s1")
			done <- result{ch, err}
		}()
		synctest.Wait() // Watch has read v1 and is held up

		change(db, h, mc.StateStarting, 2) // the newer read delivers v2

		close(release)
		r := <-done
		if r.err != nil {
			t.Fatalf("Watch: %v", r.err)
		}
		synctest.Wait()
		if got := take(t, r.ch); got.Version != 2 || got.State != mc.StateStarting {
			t.Fatalf("got %s v%d, want starting v2", got.State, got.Version)
		}
		expect(t, r.ch, "empty")
	})
}

func TestHubEnds(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, h := start(t, mc.StateReady, 3)
			ctx, cancel := context.WithCancel(t.Context())
			ch := watch(t, ctx, h)
			take(t, ch)
			cancel()
			synctest.Wait()
			expect(t, ch, "closed")
		})
	})
	t.Run("close", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, h := start(t, mc.StateReady, 3)
			ch := watch(t, t.Context(), h)
			h.Close()
			if got := take(t, ch); got.Version != 3 {
				t.Fatalf("got version %d, want 3", got.Version)
			}
			expect(t, ch, "closed")
			if _, err := h.Watch(t.Context(), "s1"); mc.ErrorCode(err) != mc.EUNAVAILABLE {
				t.Fatalf("Watch after Close: got %v, want code %s", err, mc.EUNAVAILABLE)
			}
		})
	})
	t.Run("not found", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, h := start(t, "", 0)
			if _, err := h.Watch(t.Context(), "s1"); mc.ErrorCode(err) != mc.ENOTFOUND {
				t.Fatalf("got %v, want code %s", err, mc.ENOTFOUND)
			}
		})
	})
}
