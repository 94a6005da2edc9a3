package session_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/drivertest"
	"github.com/master-controller/mc/session"
)

// TestReconcileSparesSessionsBeingCreated creates sessions continuously
// while reconcile runs every 100 ms: no healthy session may be failed
// (machine_missing because the host was listed before the session's machine
// existed, or controller_restart because it was read before its goroutine
// started).
func TestReconcileSparesSessionsBeingCreated(t *testing.T) {
	const creators, perCreator = 4, 100
	r := newRig(t, session.Config{ReconcileInterval: 100 * time.Millisecond}, drivertest.FakeConfig{})
	r.mgr.Run(t.Context())

	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for c := range creators {
		wg.Go(func() {
			for i := range perCreator {
				s, err := r.mgr.Start(t.Context(), fmt.Sprintf("u%d-%d", c, i), "demo")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids = append(ids, s.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		waitState(t, r.store, id, mc.StateReady)
	}
	rep, err := r.mgr.Reconcile(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 0 || len(rep.Destroyed) != 0 {
		t.Errorf("last pass: %+v, want nothing failed or destroyed", rep)
	}
	failed, _, err := r.store.Sessions(t.Context(), mc.SessionFilter{State: mc.StateFailed, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range failed {
		t.Errorf("session %s failed: %s", s.ID, s.Reason)
	}
}
