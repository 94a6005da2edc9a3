package session_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
)

// outageStore is a store that can be taken down: while down, every call
// fails with EUNAVAILABLE (store_unreachable), as PostgreSQL does when it is
// stopped. It comes back when up is called, or by itself after upAfter
// failed calls.
type outageStore struct {
	mc.Store
	mu      sync.Mutex
	down    bool
	upAfter int
	failed  int
	// readFaults fails the next reads of a session (by id) with an
	// internal error, as a broken row or a driver fault would.
	readFaults map[string]int
}

// failReads makes the next n reads of session id fail with EINTERNAL
// (store_error), up or down.
func (o *outageStore) failReads(id string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.readFaults == nil {
		o.readFaults = map[string]int{}
	}
	o.readFaults[id] = n
}

func (o *outageStore) readFault(id string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.readFaults[id] <= 0 {
		return nil
	}
	o.readFaults[id]--
	return mc.Errorf(mc.EINTERNAL, mc.ReasonStoreError, "test: the read of session %s failed", id)
}

func (o *outageStore) takeDown(upAfter int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down, o.upAfter, o.failed = true, upAfter, 0
}

func (o *outageStore) up() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = false
}

func (o *outageStore) check() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down {
		return nil
	}
	o.failed++
	if o.upAfter > 0 && o.failed >= o.upAfter {
		o.down = false
	}
	return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreUnreachable, Message: "The store cannot be reached."}
}

func (o *outageStore) Session(ctx context.Context, id string) (*mc.Session, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := o.readFault(id); err != nil {
		return nil, err
	}
	return o.Store.Session(ctx, id)
}

func (o *outageStore) Sessions(ctx context.Context, f mc.SessionFilter) ([]*mc.Session, string, error) {
	if err := o.check(); err != nil {
		return nil, "", err
	}
	return o.Store.Sessions(ctx, f)
}

func (o *outageStore) Transition(ctx context.Context, t mc.Transition) (*mc.Session, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return o.Store.Transition(ctx, t)
}

func (o *outageStore) SetMachine(ctx context.Context, id string, version int64, m mc.Machine) (*mc.Session, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return o.Store.SetMachine(ctx, id, version, m)
}

func (o *outageStore) Touch(ctx context.Context, id string, at time.Time) error {
	if err := o.check(); err != nil {
		return err
	}
	return o.Store.Touch(ctx, id, at)
}

func (o *outageStore) Watch(ctx context.Context, id string) (<-chan *mc.Session, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return o.Store.Watch(ctx, id)
}

// hookDriver calls onCreate after each machine is created and onDestroy
// before each is destroyed; it records the spec of every Create.
type hookDriver struct {
	*fake.Driver
	onCreate, onDestroy func()
	mu                  sync.Mutex
	specs               []mc.MachineSpec
}

func (d *hookDriver) Create(ctx context.Context, spec mc.MachineSpec) (mc.Machine, error) {
	d.mu.Lock()
	d.specs = append(d.specs, spec)
	d.mu.Unlock()
	m, err := d.Driver.Create(ctx, spec)
	if err == nil && d.onCreate != nil {
		d.onCreate()
	}
	return m, err
}

func (d *hookDriver) Destroy(ctx context.Context, id string) error {
	if d.onDestroy != nil {
		d.onDestroy()
	}
	return d.Driver.Destroy(ctx, id)
}

func newOutageRig(t *testing.T, cfg session.Config) (*outageStore, *hookDriver, *session.Manager, mc.Store) {
	t.Helper()
	inner, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	st := &outageStore{Store: inner}
	drv := &hookDriver{Driver: fake.New(fake.Config{})}
	cfg.Replica, cfg.StoreRetry, cfg.DestroyGrace = "r1", time.Millisecond, time.Millisecond
	mgr := session.New(cfg, session.Deps{Store: st, Driver: drv, Providers: testProviders, Vault: &recordingVault{}})
	t.Cleanup(func() { mgr.Close() })
	return st, drv, mgr, inner
}

// TestStoreOutageDuringStartRecovers: the store goes away just as the
// machine has been created and comes back before the start deadline; the
// writes of the start are retried and the session becomes ready.
func TestStoreOutageDuringStartRecovers(t *testing.T) {
	st, drv, mgr, inner := newOutageRig(t, session.Config{})
	drv.onCreate = func() { st.takeDown(6) }
	s, err := mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, inner, s.ID, mc.StateReady)
	if ms, err := drv.Inspect(t.Context(), got.Machine.ID); err != nil || ms.SessionID != s.ID {
		t.Errorf("machine %s of a ready session: %+v, %v; want one of session %s", got.Machine.ID, ms, err, s.ID)
	}
}

// TestStoreOutagePastStartDeadline: the store stays away past the start
// deadline. The machine is destroyed, and once the store answers again the
// session ends failed with the true reason, store_unreachable (not left
// starting for reconcile to call controller_restart).
func TestStoreOutagePastStartDeadline(t *testing.T) {
	st, drv, mgr, inner := newOutageRig(t, session.Config{StartTimeout: 200 * time.Millisecond})
	drv.onCreate = func() { st.takeDown(0) }
	drv.onDestroy = st.up // the store is back only once the machine is gone
	s, err := mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, inner, s.ID, mc.StateFailed)
	if got.Reason != mc.ReasonStoreUnreachable {
		t.Errorf("reason %s, want %s", got.Reason, mc.ReasonStoreUnreachable)
	}
	waitGone(t, drv.Driver, s.ID)
}

// created returns the specs of the machines asked for so far.
func (d *hookDriver) created() []mc.MachineSpec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.specs)
}

// TestPoolClaimSurvivesFailedRead: whether a session claimed a pooled
// machine is what the create path knows, not what a read after it says. A
// claimed session whose next read of the store fails is still driven on its
// pooled machine: no machine is created for it (no cold start), its login
// runs on the pooled machine, and it signs in.
func TestPoolClaimSurvivesFailedRead(t *testing.T) {
	st, drv, mgr, inner := newOutageRig(t, session.Config{Pool: map[string]int{"demo": 1}, LoginPoll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mgr.Run(ctx)
	pooled := waitPool(t, inner, "1 ready", readyN("demo", 1))["demo"][0]
	st.failReads(pooled, 1) // the session takes the pooled machine's id
	s, err := mgr.Start(t.Context(), "alice", "demo")
	if err != nil || s.ID != pooled || !s.Machine.Pooled {
		t.Fatalf("Start: %+v, %v; want a session on pooled machine %s", s, err, pooled)
	}
	testutil.WaitFor(t, 10*time.Second, "the login started on the pooled machine", func() error {
		if drv.LoginPolls(pooled) == 0 {
			if cur, err := inner.Session(t.Context(), s.ID); err == nil && cur.State.Final() {
				t.Fatalf("session ended %s/%s before its login started", cur.State, cur.Reason)
			}
			return errors.New("its login status was never asked for")
		}
		return nil
	})
	if !drv.CompleteLogin(pooled, map[string]string{"~/.demo/credentials.json": `{"access_token":"demo-x"}`}) {
		t.Fatal("the pooled machine is gone")
	}
	got := waitState(t, inner, s.ID, mc.StateCompleted)
	if got.Machine.ID != pooled || !got.Machine.Pooled {
		t.Errorf("completed on %+v, want pooled machine %s", got.Machine, pooled)
	}
	evs, err := inner.Events(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.State == mc.StateStarting {
			t.Errorf("event %+v: the claimed session started a machine", e)
		}
	}
	for _, spec := range drv.created() {
		if !spec.Pooled {
			t.Errorf("machine %s created for session %s, not for the pool: a claimed session started cold", spec.ID, spec.SessionID)
		}
	}
}
