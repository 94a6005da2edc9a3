package session_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
)

// storeKinds runs fn on SQLite and on PostgreSQL; open opens another
// handle on the test's one database (one per replica).
func storeKinds(t *testing.T, fn func(t *testing.T, open func(t *testing.T) mc.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "mc.db")
		fn(t, func(t *testing.T) mc.Store {
			st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url := pgtest.Shared(t)
		fn(t, func(t *testing.T) mc.Store {
			st, err := postgres.Open(t.Context(), url, postgres.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		})
	})
}

// replica is one controller replica of a test: its own store handle, its
// view of the shared fake cluster, its manager, vault, metrics and log.
type replica struct {
	name   string
	store  mc.Store
	driver *fake.Driver
	mgr    *session.Manager
	vault  *recordingVault
	reg    *prometheus.Registry
	log    *testutil.SyncBuffer
}

// cluster is replicas on one database and one fake cluster, with one
// machine key (replicas share the vault keys) and one fake clock.
type cluster struct {
	open   func(t *testing.T) mc.Store
	driver *fake.Driver
	key    mc.MachineKey
	clock  *testutil.Clock
}

func newCluster(open func(t *testing.T) mc.Store) *cluster {
	return &cluster{open: open, driver: fake.New(fake.Config{Cluster: true}), key: mc.NewMachineKey(mc.NewSecret(32)),
		// The fake clock starts at the real time: the manager also derives
		// real deadlines (contexts) from the sessions' expiries.
		clock: testutil.NewClock(time.Now())}
}

const heartbeat = 2 * time.Second

// twoRunning starts replicas ra and rb of a new cluster, both running
// (heartbeats and looks for sessions to adopt on the cluster's clock).
func twoRunning(t *testing.T, open func(t *testing.T) mc.Store) (*cluster, *replica, *replica) {
	t.Helper()
	c := newCluster(open)
	a, b := c.replica(t, "ra"), c.replica(t, "rb")
	a.mgr.Run(t.Context())
	b.mgr.Run(t.Context())
	return c, a, b
}

func (c *cluster) replica(t *testing.T, name string) *replica {
	t.Helper()
	return c.replicaWith(t, name, nil)
}

// replicaWith is replica with vault in front of the replica's own
// recording vault (nil: none).
func (c *cluster) replicaWith(t *testing.T, name string, vault func(session.Vault) session.Vault) *replica {
	t.Helper()
	r := &replica{name: name, store: c.open(t), driver: c.driver.Share(), vault: &recordingVault{},
		reg: prometheus.NewRegistry(), log: &testutil.SyncBuffer{}}
	var v session.Vault = r.vault
	if vault != nil {
		v = vault(v)
	}
	r.mgr = session.New(session.Config{Replica: name, DestroyGrace: time.Millisecond, LoginPoll: 10 * time.Millisecond,
		IdleTimeout: time.Hour, HeartbeatInterval: heartbeat},
		session.Deps{Store: r.store, Driver: r.driver, Providers: testProviders, Vault: v, MachineKey: c.key,
			Clock: c.clock, Registry: r.reg, Logger: slog.New(slog.NewTextHandler(r.log, nil))})
	t.Cleanup(func() { r.mgr.Close() })
	return r
}

// startReady starts n sessions of provider on r and waits until each is
// ready.
func startReady(t *testing.T, r *replica, provider string, n int) []*mc.Session {
	t.Helper()
	var list []*mc.Session
	for i := range n {
		s, err := r.mgr.Start(t.Context(), fmt.Sprintf("%s-%s-%d", r.name, provider, i), provider)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, waitState(t, r.store, s.ID, mc.StateReady))
	}
	return list
}

// waitOwner waits (through Watch) until replica owns session id.
func waitOwner(t *testing.T, st mc.Store, id, replica string) *mc.Session {
	t.Helper()
	return testutil.WaitSession(t, st, id, 10*time.Second, "owned by "+replica, func(s *mc.Session) bool {
		return s.Replica == replica
	})
}

// adoptions returns the session_adopted events of session id.
func adoptions(t *testing.T, st mc.Store, id string) []mc.Event {
	t.Helper()
	ev, err := st.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(ev, func(e mc.Event) bool { return e.Reason != mc.ReasonSessionAdopted })
}

func replicaState(t *testing.T, st mc.Store, name string) mc.Replica {
	t.Helper()
	list, err := st.Replicas(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if r.ID == name {
			return r
		}
	}
	return mc.Replica{}
}

// waitPolled waits until the login of machine id has been polled: it runs,
// and a replica drives it.
func waitPolled(t *testing.T, d *fake.Driver, id string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the login of machine "+id+" polled", func() error {
		if d.LoginPolls(id) == 0 {
			return fmt.Errorf("no poll")
		}
		return nil
	})
}

// sealed returns how many credentials v holds.
func sealed(v *recordingVault) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.creds)
}

// waitDriving waits until r drives every one of sessions.
func waitDriving(t *testing.T, r *replica, sessions []*mc.Session) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, r.name+" to drive every adopted session", func() error {
		for _, s := range sessions {
			if !r.mgr.Driving(s.ID) {
				return fmt.Errorf("%s does not drive %s", r.name, s.ID)
			}
		}
		return nil
	})
}

// TestGracefulStopHandsOver: replica A stops gracefully with live sessions
// on a cluster driver; none is failed, B adopts every one at its next look
// (not after A's heartbeat goes stale) and drives them on: it watches their
// machines and completes their sign-ins.
func TestGracefulStopHandsOver(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c, a, b := twoRunning(t, open)
		sessions := startReady(t, a, "demo", 4)
		// A CLI login whose sign-in page is shown: capturing.
		cli := startReady(t, a, "cli", 1)[0]
		waitPolled(t, c.driver, cli.Machine.ID)
		c.driver.ProgressLogin(cli.Machine.ID, mc.PhaseWaitingForUser, "https://auth.example.com/signin")
		waitState(t, a.store, cli.ID, mc.StateCapturing)
		sessions = append(sessions, cli)

		// B's reconcile sees A's machines on the shared cluster and leaves
		// them alone: their sessions are live.
		rep, err := b.mgr.Reconcile(t.Context())
		if err != nil || len(rep.Destroyed)+len(rep.Failed)+len(rep.AdoptedSessions) != 0 {
			t.Fatalf("B's reconcile with A alive: %+v, %v; want nothing done", rep, err)
		}

		if err := a.mgr.Close(); err != nil {
			t.Fatal(err)
		}
		if got := replicaState(t, b.store, "ra"); got.State != mc.ReplicaStopping {
			t.Fatalf("replica ra after its Close: %+v, want stopping", got)
		}
		for _, s := range sessions {
			got, err := b.store.Session(t.Context(), s.ID)
			if err != nil || got.State.Final() || got.Replica != "ra" {
				t.Fatalf("session %s after A's Close: %s owned by %s, %v; want live, still A's", s.ID, stateOf(got), got.Replica, err)
			}
			if st, err := c.driver.Inspect(t.Context(), s.Machine.ID); err != nil || !st.Running {
				t.Fatalf("machine of %s after A's Close: %+v, %v; want running", s.ID, st, err)
			}
		}

		// B's next look, one heartbeat later; A's heartbeat is not stale.
		c.clock.Advance(heartbeat)
		for _, s := range sessions {
			got := waitOwner(t, b.store, s.ID, "rb")
			if got.State != s.State && !(s.ID == cli.ID && got.State == mc.StateCapturing) {
				t.Errorf("session %s adopted in %s, want %s", s.ID, stateOf(got), s.State)
			}
			ev := adoptions(t, b.store, s.ID)
			if len(ev) != 1 || ev[0].Replica != "rb" || !strings.Contains(ev[0].Message, "ra") ||
				!strings.Contains(ev[0].Message, string(mc.ReasonReplicaStopping)) {
				t.Errorf("adoption events of %s: %+v, want one by rb from ra (replica_stopping)", s.ID, ev)
			}
		}
		waitDriving(t, b, sessions)
		if got := metricValue(t, b.reg, "mc_session_adoptions_total", map[string]string{"cause": string(mc.ReasonReplicaStopping)}); got != float64(len(sessions)) {
			t.Errorf("mc_session_adoptions_total{cause=replica_stopping} = %v, want %d", got, len(sessions))
		}
		if log := b.log.String(); strings.Count(log, "msg=\"session adopted\"") != len(sessions) ||
			!strings.Contains(log, "from_replica=ra to_replica=rb") {
			t.Errorf("B's log has no line per adoption naming both replicas:\n%s", log)
		}

		// B watches the machines: one that dies fails its session.
		dead := sessions[0]
		c.driver.Kill(dead.Machine.ID)
		if got := waitState(t, b.store, dead.ID, mc.StateFailed); got.Reason != mc.ReasonMachineExited {
			t.Errorf("session whose machine died: %s, want failed/machine_exited", stateOf(got))
		}
		// B completes the sign-ins, the CLI one included.
		for _, s := range sessions[1:] {
			waitPolled(t, c.driver, s.Machine.ID)
			c.driver.CompleteLogin(s.Machine.ID, map[string]string{"~/.demo/credentials.json": `{"token":"t"}`, "~/.acme.json": `{"exp":1}`})
			if got := waitState(t, b.store, s.ID, mc.StateCompleted); got.Replica != "rb" {
				t.Errorf("session %s completed by %s, want rb", s.ID, got.Replica)
			}
			waitGone(t, c.driver, s.ID)
		}
		if n := sealed(b.vault); n != len(sessions)-1 {
			t.Errorf("B sealed %d credentials, want %d", n, len(sessions)-1)
		}
		if n := sealed(a.vault); n != 0 {
			t.Errorf("A sealed %d credentials after it stopped, want none", n)
		}
	})
}

// TestStaleHeartbeatAdopted: replica A dies (no stop, no more heartbeats);
// once its heartbeat is older than the replica timeout (three heartbeats),
// B adopts its sessions and enforces their lifetimes. Time is a fake clock.
func TestStaleHeartbeatAdopted(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c, a, b := twoRunning(t, open)
		sessions := startReady(t, a, "demo", 3)
		a.mgr.Halt()

		// Five seconds on: A missed two heartbeats, it is not dead yet.
		c.clock.Advance(5 * time.Second)
		if got, err := b.mgr.Adopt(t.Context()); err != nil || len(got) != 0 {
			t.Fatalf("adopt 5 s after A's last heartbeat: %v, %v; want none", got, err)
		}
		// Seven: past three heartbeats. (B's own loop looks too; a look
		// made here does not wait on when that loop wakes.)
		c.clock.Advance(2 * time.Second)
		if _, err := b.mgr.Adopt(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, s := range sessions {
			waitOwner(t, b.store, s.ID, "rb")
			if ev := adoptions(t, b.store, s.ID); len(ev) != 1 || !strings.Contains(ev[0].Message, string(mc.ReasonHeartbeatStale)) {
				t.Errorf("adoption events of %s: %+v, want one, heartbeat_stale", s.ID, ev)
			}
			if got, _ := b.store.Session(t.Context(), s.ID); got.State != mc.StateReady {
				t.Errorf("session %s after the adoption: %s, want ready", s.ID, stateOf(got))
			}
		}
		waitDriving(t, b, sessions) // the adoptions are counted before the driving starts
		if got := metricValue(t, b.reg, "mc_session_adoptions_total", map[string]string{"cause": string(mc.ReasonHeartbeatStale)}); got != 3 {
			t.Errorf("mc_session_adoptions_total{cause=heartbeat_stale} = %v, want 3", got)
		}
		// B enforces the lifetimes of what it adopted.
		c.clock.Advance(31 * time.Minute)
		for _, s := range sessions {
			if got := waitState(t, b.store, s.ID, mc.StateExpired); got.Reason != mc.ReasonMaxLifetime {
				t.Errorf("session %s: %s, want expired/max_lifetime", s.ID, stateOf(got))
			}
			waitGone(t, c.driver, s.ID)
		}
		// A has nothing left: it is forgotten at B's next look.
		if _, err := b.mgr.Adopt(t.Context()); err != nil {
			t.Fatal(err)
		}
		if r := replicaState(t, b.store, "ra"); r.ID != "" {
			t.Errorf("replica ra after B's look with nothing left of it: %+v, want it forgotten", r)
		}
	})
}

// TestAdoptionRace: two replicas look for sessions to adopt at once: each
// session of the replica that stopped is adopted exactly once, and driven
// by that one adopter to its completion.
func TestAdoptionRace(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c := newCluster(open)
		a, b, d := c.replica(t, "ra"), c.replica(t, "rb"), c.replica(t, "rc")
		a.mgr.Run(t.Context())
		sessions := startReady(t, a, "demo", 10)
		if err := a.mgr.Close(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		got := make([][]string, 2)
		for i, r := range []*replica{b, d} {
			wg.Go(func() {
				ids, err := r.mgr.Adopt(context.WithoutCancel(t.Context()))
				if err != nil {
					t.Errorf("%s adopt: %v", r.name, err)
				}
				got[i] = ids
			})
		}
		wg.Wait()
		by := map[string]*replica{}
		for i, r := range []*replica{b, d} {
			for _, id := range got[i] {
				if by[id] != nil {
					t.Errorf("session %s adopted by %s and %s", id, by[id].name, r.name)
				}
				by[id] = r
			}
		}
		for _, s := range sessions {
			r := by[s.ID]
			if r == nil {
				t.Errorf("session %s adopted by nobody", s.ID)
				continue
			}
			cur, _ := r.store.Session(t.Context(), s.ID)
			if ev := adoptions(t, r.store, s.ID); cur.Replica != r.name || len(ev) != 1 {
				t.Errorf("session %s owned by %s with adoption events %+v, want %s and 1", s.ID, cur.Replica, ev, r.name)
			}
			other := b
			if r == b {
				other = d
			}
			if other.mgr.Driving(s.ID) {
				t.Errorf("session %s driven by %s too", s.ID, other.name)
			}
		}
		for _, s := range sessions {
			waitPolled(t, c.driver, s.Machine.ID)
			c.driver.CompleteLogin(s.Machine.ID, map[string]string{"~/.demo/credentials.json": `{}`})
			waitState(t, b.store, s.ID, mc.StateCompleted)
		}
		if n := sealed(b.vault) + sealed(d.vault); n != len(sessions) {
			t.Errorf("%d credentials sealed, want %d (one per session)", n, len(sessions))
		}
	})
}

// TestHostDriverNoAdoption: with a host driver (no cluster) the old
// behaviour stays: a graceful stop ends the sessions (controller_shutdown)
// and another replica adopts nothing.
func TestHostDriverNoAdoption(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c := newCluster(open)
		c.driver = fake.New(fake.Config{})
		a, b := c.replica(t, "ra"), c.replica(t, "rb")
		a.mgr.Run(t.Context())
		sessions := startReady(t, a, "demo", 2)
		a.mgr.Close()
		for _, s := range sessions {
			got, _ := b.store.Session(t.Context(), s.ID)
			if got.State != mc.StateFailed || got.Reason != mc.ReasonControllerStop {
				t.Errorf("session %s after a graceful stop: %s, want failed/controller_shutdown", s.ID, stateOf(got))
			}
		}
		if ids, err := b.mgr.Adopt(t.Context()); err != nil || len(ids) != 0 {
			t.Errorf("adopt with a host driver: %v, %v; want none", ids, err)
		}
	})
}

// TestRestartResumesOwnSessions: a replica that crashed and starts again
// under the same name finds its sessions' machines still running on the
// cluster and drives them on, instead of failing them controller_restart.
func TestRestartResumesOwnSessions(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c := newCluster(open)
		a := c.replica(t, "ra")
		a.mgr.Run(t.Context())
		sessions := startReady(t, a, "demo", 2)
		a.mgr.Halt()
		c.clock.Advance(time.Second) // the new process begins after the sessions were created
		again := c.replica(t, "ra")
		rep, err := again.mgr.Reconcile(t.Context())
		if err != nil || len(rep.AdoptedSessions) != 2 || len(rep.Failed)+len(rep.Destroyed) != 0 {
			t.Fatalf("reconcile after the restart: %+v, %v; want both sessions adopted, nothing failed or destroyed", rep, err)
		}
		for _, s := range sessions {
			if ev := adoptions(t, again.store, s.ID); len(ev) != 1 || !strings.Contains(ev[0].Message, string(mc.ReasonReplicaRestarted)) {
				t.Errorf("adoption events of %s: %+v, want one, replica_restarted", s.ID, ev)
			}
			waitPolled(t, c.driver, s.Machine.ID)
			c.driver.CompleteLogin(s.Machine.ID, map[string]string{"~/.demo/credentials.json": `{}`})
			waitState(t, again.store, s.ID, mc.StateCompleted)
		}
	})
}

// TestReconcileAdoptsUnknownOwner: a live session whose replica the store
// has no heartbeat of (forgotten, or from before replicas heartbeat) is
// adopted by reconcile once it is older than the replica timeout; one that
// was still pending starts on a machine of the adopter.
func TestReconcileAdoptsUnknownOwner(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c := newCluster(open)
		b := c.replica(t, "rb")
		now := c.clock.Now().UTC()
		s := &mc.Session{ID: mc.NewID(), UserID: "u1", Provider: "demo", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := b.store.CreateSession(t.Context(), s, "ghost", mc.Capacity{}); err != nil {
			t.Fatal(err)
		}
		if rep, err := b.mgr.Reconcile(t.Context()); err != nil || len(rep.AdoptedSessions) != 0 {
			t.Fatalf("reconcile at once: %+v, %v; want nothing adopted (the owner may be starting)", rep, err)
		}
		c.clock.Advance(4 * heartbeat)
		rep, err := b.mgr.Reconcile(t.Context())
		if err != nil || len(rep.AdoptedSessions) != 1 || rep.AdoptedSessions[0] != s.ID {
			t.Fatalf("reconcile past the replica timeout: %+v, %v; want %s adopted", rep, err, s.ID)
		}
		if got := waitState(t, b.store, s.ID, mc.StateReady); got.Replica != "rb" || got.Machine.ID == "" {
			t.Errorf("adopted pending session: %+v, want ready on a machine of rb", got)
		}
	})
}

// gateVault holds every Put until the gate opens or its context ends.
type gateVault struct {
	session.Vault
	entered chan struct{}
	gate    chan struct{}
}

func (v *gateVault) Put(ctx context.Context, c mc.Credential) error {
	v.entered <- struct{}{}
	select {
	case <-v.gate:
	case <-ctx.Done(): // as a store write does
		return ctx.Err()
	}
	return v.Vault.Put(ctx, c)
}

// TestStopWhileSealing: a replica that stops after it fetched a login's
// result (the agent has let it go) seals it and completes the session before
// it goes, instead of handing over a session whose result is lost.
func TestStopWhileSealing(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c := newCluster(open)
		gv := &gateVault{entered: make(chan struct{}, 1), gate: make(chan struct{})}
		a := c.replicaWith(t, "ra", func(v session.Vault) session.Vault { gv.Vault = v; return gv })
		a.mgr.Run(t.Context())
		s := startReady(t, a, "demo", 1)[0]
		waitPolled(t, c.driver, s.Machine.ID)
		c.driver.CompleteLogin(s.Machine.ID, map[string]string{"~/.demo/credentials.json": `{}`})
		<-gv.entered // the result is fetched; the seal waits
		closed := make(chan error, 1)
		go func() { closed <- a.mgr.Close() }()
		<-a.mgr.Stopped() // the replica stops driving while the seal waits
		close(gv.gate)
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		got, err := a.store.Session(t.Context(), s.ID)
		if err != nil || got.State != mc.StateCompleted || got.Replica != "ra" {
			t.Fatalf("session after a stop during its seal: %s by %s, %v; want completed by ra", stateOf(got), got.Replica, err)
		}
		if n := sealed(a.vault); n != 1 {
			t.Errorf("sealed %d credentials, want 1", n)
		}
	})
}

// TestHeartbeatRestartsReplica: a running replica whose row says stopping
// (an earlier process of its name stopped, and this one's start could not be
// recorded) or was forgotten is recorded running again at its next
// heartbeat, so that nobody adopts the sessions it drives.
func TestHeartbeatRestartsReplica(t *testing.T) {
	t.Parallel()
	storeKinds(t, func(t *testing.T, open func(t *testing.T) mc.Store) {
		c, a, _ := twoRunning(t, open)
		for _, mark := range []func() error{
			func() error { return a.store.StopReplica(t.Context(), "ra", c.clock.Now()) },
			func() error {
				_, err := a.store.ForgetReplica(t.Context(), replicaState(t, a.store, "ra"))
				return err
			},
		} {
			if err := mark(); err != nil {
				t.Fatal(err)
			}
			c.clock.WaitForWaiters(t, 2) // both replicas' loops wait for their next heartbeat
			c.clock.Advance(heartbeat)
			testutil.WaitFor(t, 10*time.Second, "ra running again", func() error {
				if r := replicaState(t, a.store, "ra"); r.State != mc.ReplicaRunning {
					return fmt.Errorf("ra: %+v", r)
				}
				return nil
			})
		}
	})
}
