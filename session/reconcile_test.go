package session_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/session"
)

// TestReconcileSparesSessionsBeingCreated creates sessions continuously
// while reconcile runs every 100 ms: no healthy session may be failed
// (machine_missing because the host was listed before the session's machine
// existed, or controller_restart because it was read before its goroutine
// started). TestReconcileRaces below replays each window deterministically.
func TestReconcileSparesSessionsBeingCreated(t *testing.T) {
	const creators, perCreator = 4, 75
	// LoginPoll is long: the test is about starts, not logins.
	r := newRig(t, session.Config{ReconcileInterval: 100 * time.Millisecond, LoginPoll: time.Second}, fake.Config{})
	r.mgr.Run(t.Context())

	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for c := range creators {
		wg.Go(func() {
			for i := range perCreator {
				s, err := r.mgr.Start(t.Context(), fmt.Sprintf("u%d-%d", c, i), "long")
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

// listHookDriver runs onList once, after the host has been listed and
// before the list is returned.
type listHookDriver struct {
	*fake.Driver
	once   sync.Once
	onList func()
}

func (d *listHookDriver) List(ctx context.Context) ([]mc.MachineStatus, error) {
	ms, err := d.Driver.List(ctx)
	d.once.Do(d.onList)
	return ms, err
}

// createHookStore runs onCreate once, after a session has been inserted
// and before CreateSession returns (before the manager drives it).
type createHookStore struct {
	mc.Store
	once     sync.Once
	onCreate func()
}

func (s *createHookStore) CreateSession(ctx context.Context, sess *mc.Session, replica string, c mc.Capacity) error {
	err := s.Store.CreateSession(ctx, sess, replica, c)
	s.once.Do(s.onCreate)
	return err
}

// TestReconcileRaces replays, deterministically, the two windows in which
// reconcile failed a healthy session: a session that became ready after the
// host was listed (machine_missing), and a session read after it was
// inserted but before its goroutine started (controller_restart).
func TestReconcileRaces(t *testing.T) {
	newManager := func(t *testing.T, st mc.Store, d mc.Driver) *session.Manager {
		m := session.New(session.Config{Replica: "r1", DestroyGrace: time.Millisecond},
			session.Deps{Store: st, Driver: d, Providers: testProviders, Vault: &recordingVault{}})
		t.Cleanup(func() { m.Close() })
		return m
	}
	t.Run("ready after the host was listed", func(t *testing.T) {
		r := newRig(t, session.Config{}, fake.Config{})
		d := &listHookDriver{Driver: r.driver}
		mgr := newManager(t, r.store, d)
		var id string
		d.onList = func() {
			s, err := mgr.Start(t.Context(), "alice", "long")
			if err != nil {
				t.Fatal(err)
			}
			id = s.ID
			waitState(t, r.store, id, mc.StateReady)
		}
		if _, err := mgr.Reconcile(t.Context()); err != nil {
			t.Fatal(err)
		}
		if s, _ := r.store.Session(t.Context(), id); s.State != mc.StateReady {
			t.Errorf("session %s/%s after reconcile, want ready", s.State, s.Reason)
		}
	})
	t.Run("read before it is driven", func(t *testing.T) {
		r := newRig(t, session.Config{}, fake.Config{})
		st := &createHookStore{Store: r.store}
		mgr := newManager(t, st, r.driver)
		st.onCreate = func() {
			if _, err := mgr.Reconcile(t.Context()); err != nil {
				t.Error(err)
			}
		}
		s, err := mgr.Start(t.Context(), "alice", "long")
		if err != nil {
			t.Fatal(err)
		}
		if got := waitState(t, r.store, s.ID, mc.StateReady); got.State != mc.StateReady {
			t.Errorf("session %s/%s, want ready", got.State, got.Reason)
		}
	})
}
