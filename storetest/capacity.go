package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/master-controller/mc"
)

// createMany creates n sessions of distinct users at once, alternating
// between the stores, with capacity c, and returns the created ones and the
// refusals.
func createMany(tb testing.TB, stores []mc.Store, replica string, n int, c mc.Capacity) ([]*mc.Session, []error) {
	tb.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []*mc.Session
		refused []error
	)
	for i := range n {
		wg.Go(func() {
			sess := NewSession(fmt.Sprint(replica, "-user-", i), "demo", time.Time{})
			err := stores[i%len(stores)].CreateSession(context.Background(), sess, replica, c)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err)
				return
			}
			created = append(created, sess)
		})
	}
	wg.Wait()
	return created, refused
}

func countActive(tb testing.TB, s mc.Store, replica string) int {
	tb.Helper()
	n, err := s.CountActive(context.Background(), replica)
	if err != nil {
		tb.Fatalf("count active of %q: %v", replica, err)
	}
	return n
}

// testCapacity: many creates at once, through two handles (two replicas on
// PostgreSQL), never leave more live sessions than the cap; a final state
// frees a slot.
func testCapacity(t *testing.T, open Opener) {
	stores := []mc.Store{open(t), open(t)}
	c := mc.Capacity{Max: 5}
	created, refused := createMany(t, stores, "r1", 60, c)
	if len(created) != c.Max {
		t.Fatalf("got %d sessions created with a cap of %d, want exactly %d", len(created), c.Max, c.Max)
	}
	for _, err := range refused {
		if e := wantErr(t, err, mc.EUNAVAILABLE, "capacity"); e.RetryAfter <= 0 {
			t.Errorf("capacity refusal without RetryAfter: %v", e)
		}
	}
	list, _, err := stores[0].Sessions(t.Context(), mc.SessionFilter{Active: true})
	if err != nil || len(list) != c.Max {
		t.Fatalf("got %d live sessions, %v, want %d", len(list), err, c.Max)
	}
	for _, s := range stores {
		if got := countActive(t, s, ""); got != c.Max {
			t.Errorf("CountActive: got %d, want %d", got, c.Max)
		}
	}

	// A user with a live session hears of it, not of the capacity.
	e := wantErr(t, stores[1].CreateSession(t.Context(), NewSession(created[0].UserID, "demo", time.Time{}), "r1", c),
		mc.ECONFLICT, "active_session")
	if e.SessionID != created[0].ID {
		t.Errorf("got SessionID %q, want %q", e.SessionID, created[0].ID)
	}

	// Every final state frees a slot; other transitions do not.
	reach(t, stores[0], created[1], mc.StateReady)
	move(t, stores[0], created[0], mc.StateCancelled)
	if got := countActive(t, stores[1], ""); got != c.Max-1 {
		t.Errorf("after a cancel: got %d live, want %d", got, c.Max-1)
	}
	again, _ := createMany(t, stores, "again", 10, c)
	if len(again) != 1 {
		t.Fatalf("got %d created after one slot was freed, want 1", len(again))
	}
	for i, to := range []mc.State{mc.StateCompleted, mc.StateFailed, mc.StateExpired} {
		sess := get(t, stores[0], created[i+1].ID)
		reach(t, stores[i%2], sess, to)
	}
	if got := countActive(t, stores[0], ""); got != c.Max-3 {
		t.Errorf("after three more ends: got %d live, want %d", got, c.Max-3)
	}
	// A session that failed to be created takes no slot.
	wantErr(t, stores[0].CreateSession(t.Context(), NewSession(created[4].UserID, "demo", time.Time{}), "r1", c), mc.ECONFLICT, "active_session")
	if got := countActive(t, stores[0], ""); got != c.Max-3 {
		t.Errorf("after a conflict: got %d live, want %d", got, c.Max-3)
	}
}

// testCapacityPerReplica: a per-replica cap counts the sessions of the
// creating replica only; CountActive answers for every replica and for one.
func testCapacityPerReplica(t *testing.T, open Opener) {
	stores := []mc.Store{open(t), open(t)}
	c := mc.Capacity{Max: 3, PerReplica: true}
	for _, replica := range []string{"ra", "rb"} {
		created, refused := createMany(t, stores, replica, 20, c)
		if len(created) != c.Max {
			t.Fatalf("replica %s: got %d created with a cap of %d each, want %d", replica, len(created), c.Max, c.Max)
		}
		for _, err := range refused {
			wantErr(t, err, mc.EUNAVAILABLE, "capacity")
		}
		if got := countActive(t, stores[1], replica); got != c.Max {
			t.Errorf("CountActive(%s): got %d, want %d", replica, got, c.Max)
		}
	}
	if got := countActive(t, stores[0], ""); got != 2*c.Max {
		t.Errorf("CountActive of all: got %d, want %d", got, 2*c.Max)
	}
	if got := countActive(t, stores[0], "nobody"); got != 0 {
		t.Errorf("CountActive of a replica without sessions: got %d, want 0", got)
	}
	// The cluster-wide cap sees both replicas' sessions.
	wantErr(t, stores[0].CreateSession(t.Context(), NewSession("x", "demo", time.Time{}), "rc", mc.Capacity{Max: 2 * c.Max}),
		mc.EUNAVAILABLE, "capacity")
}
