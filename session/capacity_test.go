package session_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
)

// gatedStore holds every CreateSession until n of them have arrived, so
// that all the starts of a test are past whatever the manager checks before
// it creates (the widest window for a check that is not atomic).
type gatedStore struct {
	mc.Store
	mu      sync.Mutex
	n       int
	arrived int
	all     chan struct{}
}

func (g *gatedStore) CreateSession(ctx context.Context, s *mc.Session, replica string, c mc.Capacity) error {
	g.mu.Lock()
	if g.arrived++; g.arrived == g.n {
		close(g.all)
	}
	g.mu.Unlock()
	select {
	case <-g.all:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Store.CreateSession(ctx, s, replica, c)
}

// TestStartCapacityAtomic: with a cap of 5 (and a driver that holds 5
// machines), 50 simultaneous starts create exactly 5 sessions, and every one
// of them gets its machine: a created session always means a machine is
// coming (issue 11, item 7).
func TestStartCapacityAtomic(t *testing.T) {
	const max, starts = 5, 50
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gated := &gatedStore{Store: st, n: starts, all: make(chan struct{})}
	mgr := session.New(session.Config{MaxMachines: max, Replica: "r1", DestroyGrace: time.Millisecond},
		session.Deps{Store: gated, Driver: fake.New(fake.Config{MaxMachines: max}), Providers: testProviders})
	t.Cleanup(func() { mgr.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []*mc.Session
	)
	for i := range starts {
		wg.Go(func() {
			s, err := mgr.Start(ctx, fmt.Sprint("user-", i), "demo")
			if err != nil {
				if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != "capacity" {
					t.Errorf("start: got %v, want a capacity refusal", err)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			created = append(created, s)
		})
	}
	wg.Wait()
	if len(created) != max {
		t.Fatalf("got %d sessions created with a cap of %d, want %d", len(created), max, max)
	}
	for _, s := range created {
		waitState(t, st, s.ID, mc.StateReady)
	}
}
