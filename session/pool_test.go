package session_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/session"
)

// waitPool polls the store (bounded) until ok holds for the pool of r1.
func waitPool(t *testing.T, st mc.Store, what string, ok func(ready, starting map[string][]string) bool) map[string][]string {
	t.Helper()
	var ready map[string][]string
	testutil.WaitFor(t, 10*time.Second, "pool "+what, func() error {
		list, err := st.PooledMachines(t.Context(), "r1")
		if err != nil {
			t.Fatal(err)
		}
		starting := map[string][]string{}
		ready = map[string][]string{}
		for _, p := range list {
			if p.State == mc.PoolReady {
				ready[p.Provider] = append(ready[p.Provider], p.ID)
			} else {
				starting[p.Provider] = append(starting[p.Provider], p.ID)
			}
		}
		if !ok(ready, starting) {
			return fmt.Errorf("ready %v, starting %v", ready, starting)
		}
		return nil
	})
	return ready
}

func readyN(provider string, n int) func(ready, starting map[string][]string) bool {
	return func(ready, starting map[string][]string) bool {
		return len(ready[provider]) == n && len(starting[provider]) == 0
	}
}

func runPool(t *testing.T, r *rig) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.mgr.Run(ctx)
}

func TestPoolClaimIsReadyAtOnce(t *testing.T) {
	r := newRig(t, session.Config{Pool: map[string]int{"demo": 2}}, fake.Config{})
	runPool(t, r)
	pooled := waitPool(t, r.store, "2 ready", readyN("demo", 2))["demo"]

	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != mc.StateReady || !s.Machine.Pooled || s.Machine.VNCPort == 0 {
		t.Fatalf("first reply: %s on %+v, want ready on a pooled machine", s.State, s.Machine)
	}
	if s.ID != pooled[0] && s.ID != pooled[1] {
		t.Fatalf("session %s is not on one of the pooled machines %v", s.ID, pooled)
	}
	evs, err := r.store.Events(t.Context(), s.ID)
	if err != nil || len(evs) != 2 || evs[1].Reason != mc.ReasonPooled {
		t.Fatalf("events %+v, %v; want pending then ready with reason pooled", evs, err)
	}
	// The login starts at claim: the fake agent's login runs only once
	// asked, so completing it proves the session drove it.
	testutil.WaitFor(t, 5*time.Second, "the login to start", func() error {
		if !r.driver.CompleteLogin(s.ID, map[string]string{"~/.demo/credentials.json": `{"token":"t"}`}) {
			return errors.New("no machine to complete the login on")
		}
		return nil
	})
	waitState(t, r.store, s.ID, mc.StateCompleted)
	waitGone(t, r.driver, s.ID)
	// The pool refilled, with new machines only.
	again := waitPool(t, r.store, "2 ready after the claim", readyN("demo", 2))["demo"]
	for _, id := range again {
		if id == s.ID {
			t.Fatalf("claimed machine %s came back to the pool", id)
		}
	}
	// A second user gets another machine.
	s2, err := r.mgr.Start(t.Context(), "bob", "demo")
	if err != nil || !s2.Machine.Pooled || s2.ID == s.ID {
		t.Fatalf("second claim: %+v, %v", s2, err)
	}
	st, err := r.mgr.Pool(t.Context())
	if err != nil || len(st.Providers) != 1 || st.Providers[0].Target != 2 {
		t.Fatalf("pool status %+v, %v", st, err)
	}
}

func TestPoolMissStartsCold(t *testing.T) {
	r := newRig(t, session.Config{Pool: map[string]int{"quick": 1}}, fake.Config{})
	runPool(t, r)
	waitPool(t, r.store, "1 ready", readyN("quick", 1))
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != mc.StatePending || s.Machine.Pooled {
		t.Fatalf("got %s on %+v, want a cold pending session", s.State, s.Machine)
	}
	got := waitState(t, r.store, s.ID, mc.StateReady)
	if got.Machine.Pooled {
		t.Errorf("cold session marked pooled")
	}
	waitPool(t, r.store, "quick untouched", readyN("quick", 1))
}

func TestPoolEvictedForColdStart(t *testing.T) {
	r := newRig(t, session.Config{Pool: map[string]int{"quick": 2}, MaxMachines: 2}, fake.Config{})
	runPool(t, r)
	before := waitPool(t, r.store, "2 ready", readyN("quick", 2))["quick"]
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatalf("a cold start on a host full of pooled machines: %v", err)
	}
	waitState(t, r.store, s.ID, mc.StateReady)
	after := waitPool(t, r.store, "1 ready", readyN("quick", 1))["quick"]
	for _, id := range before {
		if id != after[0] {
			waitGone(t, r.driver, id)
		}
	}
	// Full: the pool does not take the session's room back, and a second
	// cold start evicts the last pooled machine.
	if _, err := r.mgr.Start(t.Context(), "bob", "demo"); err != nil {
		t.Fatal(err)
	}
	waitPool(t, r.store, "empty", readyN("quick", 0))
	_, err = r.mgr.Start(t.Context(), "carol", "demo")
	if mc.ErrorReason(err) != "capacity" {
		t.Fatalf("got %v, want capacity", err)
	}
}

func TestPoolReplacesDeadMachine(t *testing.T) {
	r := newRig(t, session.Config{Pool: map[string]int{"demo": 1}}, fake.Config{})
	runPool(t, r)
	old := waitPool(t, r.store, "1 ready", readyN("demo", 1))["demo"][0]
	r.driver.Kill(old)
	waitPool(t, r.store, "a new machine", func(ready, starting map[string][]string) bool {
		return len(ready["demo"]) == 1 && ready["demo"][0] != old
	})
	waitGone(t, r.driver, old)
}

func TestPoolRecyclesOldMachines(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	r := newRig(t, session.Config{Pool: map[string]int{"demo": 1}, PoolMaxAge: time.Hour, PoolCheck: time.Hour}, fake.Config{})
	r.mgr = session.New(r.mgr.Config(), session.Deps{Store: r.store, Driver: r.driver, Providers: testProviders, Clock: clock})
	t.Cleanup(func() { r.mgr.Close() })
	runPool(t, r)
	old := waitPool(t, r.store, "1 ready", readyN("demo", 1))["demo"][0]
	if err := r.mgr.Refill(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := waitPool(t, r.store, "unchanged", readyN("demo", 1))["demo"][0]; got != old {
		t.Fatalf("a young machine was recycled")
	}
	clock.Advance(time.Hour)
	if err := r.mgr.Refill(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitGone(t, r.driver, old)
	waitPool(t, r.store, "a fresh machine", func(ready, starting map[string][]string) bool {
		return len(ready["demo"]) == 1 && ready["demo"][0] != old
	})
}

// TestPoolAfterCrash: pool rows and machines left by a process that died
// are adopted (ready and running) or destroyed, nothing leaks, and the pool
// refills.
func TestPoolAfterCrash(t *testing.T) {
	r := newRig(t, session.Config{Pool: map[string]int{"demo": 2}}, fake.Config{})
	ctx := t.Context()
	replica := "r1"
	add := func(ready, machine bool) string {
		p := mc.PooledMachine{ID: mc.NewID(), Provider: "demo", Replica: replica, CreatedAt: time.Now()}
		if err := r.store.AddPooled(ctx, p, mc.Capacity{}); err != nil {
			t.Fatal(err)
		}
		if machine {
			m, err := r.driver.Create(ctx, mc.MachineSpec{ID: p.ID, SessionID: p.ID, Provider: "demo", Secrets: r.key.Secrets(p.ID)})
			if err != nil {
				t.Fatal(err)
			}
			if ready {
				if err := r.store.PooledReady(ctx, p.ID, m, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
		}
		return p.ID
	}
	keep := add(true, true)
	startingLeft := add(false, true)
	noMachine := add(true, false)
	replica = "r2" // another replica's (a cluster driver lists it here too): not ours to touch
	others := add(true, true)
	rep, err := r.mgr.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Adopted) != 1 || rep.Adopted[0] != keep {
		t.Errorf("adopted %v, want [%s]", rep.Adopted, keep)
	}
	if !slices.Equal(rep.Destroyed, []string{startingLeft}) {
		t.Errorf("destroyed %v, want [%s] once", rep.Destroyed, startingLeft)
	}
	waitGone(t, r.driver, startingLeft)
	list, _ := r.store.PooledMachines(ctx, "r1")
	if len(list) != 1 || list[0].ID != keep {
		t.Fatalf("pool after reconcile: %+v, want only %s", list, keep)
	}
	if _, err := r.driver.Inspect(ctx, others); err != nil {
		t.Errorf("another replica's pooled machine was destroyed: %v", err)
	}
	if err := r.store.RemovePooled(ctx, others); err != nil {
		t.Fatal(err)
	}
	_ = r.driver.Destroy(ctx, others)
	_ = noMachine
	if n, _ := r.store.CountActive(ctx, ""); n != 0 {
		t.Errorf("live sessions %d, want 0", n)
	}
	runPool(t, r)
	ready := waitPool(t, r.store, "refilled", readyN("demo", 2))["demo"]
	if ready[0] != keep && ready[1] != keep {
		t.Errorf("the adopted machine %s left the pool: %v", keep, ready)
	}
	// A graceful stop leaves nothing behind.
	r.mgr.Close()
	if ms, _ := r.driver.List(ctx); len(ms) != 0 {
		t.Errorf("machines left after Close: %+v", ms)
	}
	if list, _ := r.store.PooledMachines(ctx, ""); len(list) != 0 {
		t.Errorf("pool rows left after Close: %+v", list)
	}
}

func TestPoolMetrics(t *testing.T) {
	r := newRig(t, session.Config{}, fake.Config{StartDelay: 300 * time.Millisecond})
	reg := prometheus.NewRegistry()
	r.mgr = session.New(session.Config{Replica: "r1", Pool: map[string]int{"demo": 1}, DestroyGrace: time.Millisecond},
		session.Deps{Store: r.store, Driver: r.driver, Providers: testProviders, Registry: reg})
	t.Cleanup(func() { r.mgr.Close() })
	runPool(t, r)
	waitPool(t, r.store, "1 ready", readyN("demo", 1))
	hit, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil || !hit.Machine.Pooled {
		t.Fatalf("first start: %+v, %v; want a hit", hit, err)
	}
	// The refill takes StartDelay: the next one misses.
	miss, err := r.mgr.Start(t.Context(), "bob", "demo")
	if err != nil || miss.Machine.Pooled {
		t.Fatalf("second start: %+v, %v; want a miss", miss, err)
	}
	waitPool(t, r.store, "refilled", readyN("demo", 1))
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mc_pool_claims_total", map[string]string{"provider": "demo", "result": "hit"}, 1},
		{"mc_pool_claims_total", map[string]string{"provider": "demo", "result": "miss"}, 1},
		{"mc_pool_machines", map[string]string{"provider": "demo", "state": "ready"}, 1},
		{"mc_pool_machines", map[string]string{"provider": "demo", "state": "starting"}, 0},
		{"mc_pool_claim_seconds", nil, 2},
	} {
		if got := metricValue(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

// metricValue returns a counter's or gauge's value, or a histogram's count.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

// TestReconcilePooledLeftovers: the driver marks the machines created for
// the pool. Reconcile destroys a pooled machine that neither the pool nor a
// session holds (a process stopped between taking its row out of the pool
// and destroying it) as pool_orphaned, keeps one that a live session
// claimed, and destroys each leftover once.
func TestReconcilePooledLeftovers(t *testing.T) {
	r := newRig(t, session.Config{}, fake.Config{})
	reg := prometheus.NewRegistry()
	r.mgr = session.New(session.Config{Replica: "r1", DestroyGrace: time.Millisecond},
		session.Deps{Store: r.store, Driver: r.driver, Providers: testProviders, Registry: reg, MachineKey: r.key})
	t.Cleanup(func() { r.mgr.Close() })
	ctx := t.Context()
	create := func(id string, pooled bool) mc.Machine {
		m, err := r.driver.Create(ctx, mc.MachineSpec{ID: id, SessionID: id, Pooled: pooled, Provider: "demo", Secrets: r.key.Secrets(id)})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	leftover := mc.NewID()
	create(leftover, true)
	// Claimed by a session that another replica drives: its row left the
	// pool in the claim, and the session owns it now.
	claimed := mc.PooledMachine{ID: mc.NewID(), Provider: "demo", Replica: "r0", CreatedAt: time.Now()}
	if err := r.store.AddPooled(ctx, claimed, mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	if err := r.store.PooledReady(ctx, claimed.ID, create(claimed.ID, true), time.Now()); err != nil {
		t.Fatal(err)
	}
	s := &mc.Session{ID: mc.NewID(), UserID: "alice", Provider: "demo", CreatedAt: time.Now().UTC(), ExpiresAt: time.Now().Add(time.Hour).UTC()}
	if c, err := r.store.CreateSessionFromPool(ctx, s, "r0", mc.Capacity{}); err != nil || !c.Pooled || s.ID != claimed.ID {
		t.Fatalf("claim: %+v, %v; session %s", c, err, s.ID)
	}
	cold := mc.NewMachineID()
	create(cold, false)

	rep, err := r.mgr.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Destroyed)
	want := []string{leftover, cold}
	slices.Sort(want)
	if !slices.Equal(rep.Destroyed, want) {
		t.Errorf("destroyed %v, want %v", rep.Destroyed, want)
	}
	if ms, err := r.driver.Inspect(ctx, claimed.ID); err != nil || !ms.Pooled || !ms.Running {
		t.Errorf("the claimed pooled machine: %+v, %v; want it running and marked pooled", ms, err)
	}
	if got := metricValue(t, reg, "mc_pool_retired_total", map[string]string{"reason": string(mc.ReasonPoolOrphaned)}); got != 1 {
		t.Errorf("pooled machines retired as pool_orphaned: %v, want 1", got)
	}
}

// removeHookStore runs onRemove around the RemovePooled calls for one id:
// before (inner false) and after (inner true) the store's own.
type removeHookStore struct {
	mc.Store
	id       string
	onRemove func(call int, after bool, err error)
	onAdd    func()
	mu       sync.Mutex
	calls    int
}

func (s *removeHookStore) RemovePooled(ctx context.Context, id string) error {
	if id != s.id {
		return s.Store.RemovePooled(ctx, id)
	}
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.mu.Unlock()
	s.onRemove(call, false, nil)
	err := s.Store.RemovePooled(ctx, id)
	s.onRemove(call, true, err)
	return err
}

func (s *removeHookStore) AddPooled(ctx context.Context, p mc.PooledMachine, c mc.Capacity) error {
	if s.onAdd != nil {
		s.onAdd()
	}
	return s.Store.AddPooled(ctx, p, c)
}

// TestPoolRemovedWhileMachineDies: the refill recycles a pooled machine
// (takes its row out of the pool) just as the machine dies, and its
// goroutine, seeing the death, finds the row gone. Whichever of the two
// comes first, the machine is destroyed: by the goroutine when the recycle
// asked before the goroutine handed the machine over, else by the recycle.
func TestPoolRemovedWhileMachineDies(t *testing.T) {
	for _, tt := range []struct {
		name string
		// handedOver: the goroutine's RemovePooled returns before the
		// recycle asks for the destroy; else the ask comes first.
		handedOver bool
	}{
		{"recycle asks first", false},
		{"goroutine hands over first", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := testutil.NewClock(time.Now())
			r := newRigWithClock(t, session.Config{}, fake.Config{}, clock)
			st := &removeHookStore{Store: r.store}
			r.mgr = session.New(session.Config{Replica: "r1", Pool: map[string]int{"demo": 1}, PoolMaxAge: time.Minute,
				DestroyGrace: time.Millisecond}, session.Deps{Store: st, Driver: r.driver, Providers: testProviders,
				MachineKey: r.key, Clock: clock})
			t.Cleanup(func() { r.mgr.Close() })
			if err := r.mgr.Refill(t.Context()); err != nil {
				t.Fatal(err)
			}
			x := waitPool(t, r.store, "1 ready", readyN("demo", 1))["demo"][0]

			arrived, returned, added := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var addOnce sync.Once
			st.onAdd = func() { addOnce.Do(func() { close(added) }) }
			st.id = x
			st.onRemove = func(call int, after bool, err error) {
				switch {
				case call == 1 && after: // the recycle took the row; the machine dies
					r.driver.Kill(x)
					if tt.handedOver {
						<-returned
					} else {
						<-arrived
					}
				case call == 2 && !after: // the goroutine, on the machine's death
					close(arrived)
					if !tt.handedOver {
						<-added // the recycle has asked for the destroy
					}
				case call == 2 && after:
					if mc.ErrorCode(err) != mc.ENOTFOUND {
						t.Errorf("the goroutine's RemovePooled: %v, want not_found", err)
					}
					close(returned)
				}
			}
			clock.Advance(2 * time.Minute)
			if err := r.mgr.Refill(t.Context()); err != nil {
				t.Fatal(err)
			}
			waitGone(t, r.driver, x)
		})
	}
}
