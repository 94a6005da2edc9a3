package session_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
)

type providers map[string]mc.Provider

func (p providers) Get(name string) (mc.Provider, bool) { v, ok := p[name]; return v, ok }

var testProviders = providers{
	"demo": {Name: "demo", StartURL: "local:/demo/signin", LoginTimeout: time.Minute, Files: []mc.CredentialFile{{Path: "~/.demo/credentials.json"}}},
	"cli": {Name: "cli", LoginCommand: []string{"acme", "login"}, LoginTimeout: time.Minute, Kind: mc.KindOAuth,
		Files: []mc.CredentialFile{{Path: "~/.acme.json", ExpiresKey: "exp"}}},
	"quick": {Name: "quick", StartURL: "local:/demo/signin", LoginTimeout: 300 * time.Millisecond, Files: []mc.CredentialFile{{Path: "~/x.json"}}},
	"long":  {Name: "long", StartURL: "local:/demo/signin", LoginTimeout: time.Hour, Files: []mc.CredentialFile{{Path: "~/x.json"}}},
}

type recordingVault struct {
	mu    sync.Mutex
	creds []mc.Credential
}

func (v *recordingVault) Put(_ context.Context, c mc.Credential) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	files := make(map[string]string, len(c.Files))
	for k, s := range c.Files {
		files[k] = s
	}
	c.Files = files
	v.creds = append(v.creds, c)
	return nil
}

type rig struct {
	store  mc.Store
	driver *fake.Driver
	vault  *recordingVault
	mgr    *session.Manager
	// key derives the machines' secrets, as the manager does.
	key mc.MachineKey
}

func newRig(t *testing.T, cfg session.Config, fc fake.Config) *rig {
	t.Helper()
	return newRigWithClock(t, cfg, fc, nil)
}

// newRigWithClock is newRig with the manager on clock (the system clock when
// nil).
func newRigWithClock(t *testing.T, cfg session.Config, fc fake.Config, clock mc.TimerClock) *rig {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if cfg.Replica == "" {
		cfg.Replica = "r1"
	}
	if cfg.DestroyGrace == 0 {
		cfg.DestroyGrace = time.Millisecond
	}
	if cfg.LoginPoll == 0 {
		cfg.LoginPoll = 10 * time.Millisecond
	}
	r := &rig{store: st, driver: fake.New(fc), vault: &recordingVault{}, key: mc.NewMachineKey(mc.NewSecret(32))}
	r.mgr = session.New(cfg, session.Deps{Store: st, Driver: r.driver, Providers: testProviders, Vault: r.vault,
		MachineKey: r.key, Clock: clock})
	t.Cleanup(func() { r.mgr.Close() })
	return r
}

// waitState waits (through Watch, no polling) until the session is in want.
func waitState(t *testing.T, st mc.Store, id string, want mc.State) *mc.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ch, err := st.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var last *mc.Session
	for s := range ch {
		last = s
		if s.State == want {
			return s
		}
	}
	t.Fatalf("session %s: state %v, want %s", id, stateOf(last), want)
	return nil
}

// waitLogin waits (through Watch) until the session's login is in phase.
func waitLogin(t testing.TB, st mc.Store, id string, phase mc.LoginPhase) *mc.Session {
	t.Helper()
	return testutil.WaitSession(t, st, id, 10*time.Second, "login phase "+string(phase), func(s *mc.Session) bool {
		return s.Login != nil && s.Login.Phase == phase
	})
}

func stateOf(s *mc.Session) any {
	if s == nil {
		return nil
	}
	return string(s.State) + "/" + string(s.Reason)
}

// waitGone waits until the driver has no machine of session id.
func waitGone(t *testing.T, d *fake.Driver, id string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, "the machine of session "+id+" gone", func() error {
		ms, err := d.List(t.Context())
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.SessionID == id {
				return fmt.Errorf("machine %s still there", m.ID)
			}
		}
		return nil
	})
}

func TestStartReachesReady(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != mc.StatePending {
		t.Errorf("state = %s, want pending", s.State)
	}
	got := waitState(t, r.store, s.ID, mc.StateReady)
	if !got.Machine.IP.IsLoopback() || got.Machine.VNCPort == 0 || got.Machine.Driver != "fake" {
		t.Errorf("machine = %+v", got.Machine)
	}
	// The machine has an id of its own, and the driver knows its session.
	if got.Machine.ID == "" || got.Machine.ID == s.ID {
		t.Errorf("machine id %q, want one of its own (session %s)", got.Machine.ID, s.ID)
	}
	if st, err := r.driver.Inspect(t.Context(), got.Machine.ID); err != nil || st.SessionID != s.ID {
		t.Errorf("driver: machine %s of session %q (%v), want session %s", got.Machine.ID, st.SessionID, err, s.ID)
	}
	if got.ReadyAt.IsZero() || got.Replica != "r1" {
		t.Errorf("ready_at %v replica %q", got.ReadyAt, got.Replica)
	}
	evs, err := r.store.Events(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	var states []mc.State
	for _, e := range evs {
		states = append(states, e.State)
	}
	want := []mc.State{mc.StatePending, mc.StateStarting, mc.StateReady}
	if len(states) != len(want) {
		t.Fatalf("events %v, want %v", states, want)
	}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("events %v, want %v", states, want)
		}
	}
}

func TestStartRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{MaxMachines: 2}, fake.Config{})
	if _, err := r.mgr.Start(t.Context(), "alice", "nope"); mc.ErrorCode(err) != mc.EINVALID || mc.ErrorReason(err) != "unknown_provider" {
		t.Errorf("unknown provider: %v", err)
	}
	first, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.mgr.Start(t.Context(), "alice", "demo")
	var e *mc.Error
	if !errors.As(err, &e) || e.Code != mc.ECONFLICT || e.SessionID != first.ID {
		t.Errorf("second start: %v, want conflict naming %s", err, first.ID)
	}
	if _, err := r.mgr.Start(t.Context(), "bob", "demo"); err != nil {
		t.Fatal(err)
	}
	_, err = r.mgr.Start(t.Context(), "carol", "demo")
	if !errors.As(err, &e) || e.Code != mc.EUNAVAILABLE || e.RetryAfter <= 0 {
		t.Errorf("over capacity: %v, want unavailable with Retry-After", err)
	}
}

func TestCancelDestroysMachine(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, r.store, s.ID, mc.StateReady)
	got, err := r.mgr.Cancel(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != mc.StateCancelled || got.Reason != mc.ReasonCancelledByAPI {
		t.Errorf("cancel: %s/%s", got.State, got.Reason)
	}
	waitGone(t, r.driver, s.ID)
	if _, err := r.mgr.Cancel(t.Context(), s.ID); mc.ErrorCode(err) != mc.ECONFLICT {
		t.Errorf("second cancel: %v, want conflict", err)
	}
}

func TestCancelWhileStarting(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{StartDelay: time.Hour})
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, r.store, s.ID, mc.StateStarting)
	if _, err := r.mgr.Cancel(t.Context(), s.ID); err != nil {
		t.Fatal(err)
	}
	waitGone(t, r.driver, s.ID)
	got, _ := r.store.Session(t.Context(), s.ID)
	if got.State != mc.StateCancelled {
		t.Errorf("state %s, want cancelled", got.State)
	}
}

func TestMachineExitFailsSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "demo")
	r.driver.Kill(waitState(t, r.store, s.ID, mc.StateReady).Machine.ID)
	got := waitState(t, r.store, s.ID, mc.StateFailed)
	if got.Reason != mc.ReasonMachineExited {
		t.Errorf("reason %s, want machine_exited", got.Reason)
	}
	waitGone(t, r.driver, s.ID)
}

// TestMachineOOMFailsSession: a machine whose processes die of its memory
// limit ends its session failed with machine_oom; another session's machine
// goes on.
func TestMachineOOMFailsSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "demo")
	other, _ := r.mgr.Start(t.Context(), "bob", "demo")
	r.driver.OOMKill(waitState(t, r.store, s.ID, mc.StateReady).Machine.ID)
	waitState(t, r.store, other.ID, mc.StateReady)
	got := waitState(t, r.store, s.ID, mc.StateFailed)
	if got.Reason != mc.ReasonMachineOOM {
		t.Errorf("reason %s, want machine_oom", got.Reason)
	}
	waitGone(t, r.driver, s.ID)
	if o, _ := r.store.Session(t.Context(), other.ID); o.State != mc.StateReady {
		t.Errorf("the other session is %s %s, want ready", o.State, o.Reason)
	}
}

func TestStartTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{StartTimeout: 50 * time.Millisecond}, fake.Config{StartDelay: time.Hour})
	s, _ := r.mgr.Start(t.Context(), "alice", "demo")
	got := waitState(t, r.store, s.ID, mc.StateFailed)
	if got.Reason != mc.ReasonStartTimeout {
		t.Errorf("reason %s, want start_timeout", got.Reason)
	}
	waitGone(t, r.driver, s.ID)
}

func TestLoginCompletes(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "demo")
	ready := waitState(t, r.store, s.ID, mc.StateReady)
	files := map[string]string{"~/.demo/credentials.json": `{"access_token":"demo-x"}`}
	if !r.driver.CompleteLogin(ready.Machine.ID, files) {
		t.Fatal("no machine")
	}
	got := waitState(t, r.store, s.ID, mc.StateCompleted)
	if got.Reason != mc.ReasonSignedIn || got.EndedAt.IsZero() {
		t.Errorf("completed: reason %s ended %v", got.Reason, got.EndedAt)
	}
	waitGone(t, r.driver, s.ID)
	r.vault.mu.Lock()
	defer r.vault.mu.Unlock()
	if len(r.vault.creds) != 1 || r.vault.creds[0].Files["~/.demo/credentials.json"] != files["~/.demo/credentials.json"] ||
		r.vault.creds[0].UserID != "alice" || r.vault.creds[0].SessionID != s.ID {
		t.Errorf("vault got %+v", r.vault.creds)
	}
	var evs []mc.Event
	all, _ := r.store.Events(t.Context(), s.ID)
	for _, e := range all {
		if e.Reason != mc.ReasonLoginProgress {
			evs = append(evs, e)
		}
	}
	if n := len(evs); n != 5 || evs[3].State != mc.StateCapturing {
		t.Errorf("events %+v, want pending starting ready capturing completed", evs)
	}
}

// TestCaptureMeta: the capture records what the files say (kind, expiry)
// beside the credential and in the completion event, never a secret.
func TestCaptureMeta(t *testing.T) {
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "cli")
	mid := waitLogin(t, r.store, s.ID, mc.PhaseStartingCLI).Machine.ID
	r.driver.CompleteLogin(mid, map[string]string{"~/.acme.json": `{"token":"s3cret-token","exp":1767225600000}`})
	waitState(t, r.store, s.ID, mc.StateCompleted)
	r.vault.mu.Lock()
	got := r.vault.creds[0].Meta
	r.vault.mu.Unlock()
	if want := (mc.CredentialMeta{Kind: mc.KindOAuth, ExpiresAt: time.UnixMilli(1767225600000).UTC()}); got != want {
		t.Errorf("sealed meta %+v, want %+v", got, want)
	}
	evs, _ := r.store.Events(t.Context(), s.ID)
	last := evs[len(evs)-1]
	if !strings.Contains(last.Message, "kind oauth, expires_at 2026-01-01T00:00:00Z") || strings.Contains(last.Message, "s3cret") {
		t.Errorf("completion event %q, want the kind and expiry and no secret", last.Message)
	}
}

// TestLoginProgressAtOnce: a change of the agent's status is followed by the
// next long poll at once, so the session says what the user's page already
// shows; LoginPoll (an hour here) only spaces out agents that answer at once.
func TestLoginProgressAtOnce(t *testing.T) {
	r := newRig(t, session.Config{LoginPoll: time.Hour}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "cli")
	mid := waitLogin(t, r.store, s.ID, mc.PhaseStartingCLI).Machine.ID
	if !r.driver.ProgressLogin(mid, mc.PhaseWaitingForUser, "https://auth.openai.com/oauth/authorize") {
		t.Fatal("no machine")
	}
	waitState(t, r.store, s.ID, mc.StateCapturing)
}

// TestLoginPollRestlessAgent: an agent whose status changes at every answer
// (broken or hostile) is not polled in a loop. The bound takes the time
// that passed as given (a slow host only loosens it): at most two polls per
// LoginPoll, and the first two.
func TestLoginPollRestlessAgent(t *testing.T) {
	const poll = 100 * time.Millisecond
	r := newRig(t, session.Config{LoginPoll: poll}, fake.Config{RestlessLogin: true})
	start := time.Now()
	s, _ := r.mgr.Start(t.Context(), "alice", "cli")
	mid := waitLogin(t, r.store, s.ID, mc.PhaseStartingCLI).Machine.ID
	var polls int
	testutil.WaitFor(t, 10*time.Second, "six polls", func() error {
		if polls = r.driver.LoginPolls(mid); polls < 6 {
			return fmt.Errorf("%d polls", polls)
		}
		return nil
	})
	elapsed := time.Since(start)
	if limit := 2*int(elapsed/poll) + 4; polls > limit {
		t.Errorf("%d login status polls in %v, want at most %d (two per %v)", polls, elapsed, limit, poll)
	}
}

// BenchmarkLoginProgress: the time from the agent's change of a CLI
// login's status (its sign-in page is in front of the user) to the session
// saying so (capturing), at the default LoginPoll of 250 ms.
func BenchmarkLoginProgress(b *testing.B) {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	drv := fake.New(fake.Config{})
	mgr := session.New(session.Config{Replica: "r1", DestroyGrace: time.Millisecond},
		session.Deps{Store: st, Driver: drv, Providers: testProviders, Vault: &recordingVault{}, MachineKey: mc.NewMachineKey(mc.NewSecret(32))})
	defer mgr.Close()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		s, err := mgr.Start(b.Context(), fmt.Sprintf("u%d", i), "cli")
		if err != nil {
			b.Fatal(err)
		}
		mid := waitLogin(b, st, s.ID, mc.PhaseStartingCLI).Machine.ID
		t0 := time.Now()
		drv.ProgressLogin(mid, mc.PhaseWaitingForUser, "https://auth.openai.com/oauth/authorize")
		testutil.WaitState(b, st, s.ID, mc.StateCapturing, 10*time.Second)
		total += time.Since(t0)
		drv.FailLogin(mid, mc.ReasonLoginCommandFailed)
		testutil.WaitState(b, st, s.ID, mc.StateFailed, 10*time.Second)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "lag-ms/op")
}

func TestLoginProgress(t *testing.T) {
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "cli")
	waitState(t, r.store, s.ID, mc.StateReady)
	mid := waitLogin(t, r.store, s.ID, mc.PhaseStartingCLI).Machine.ID
	const page = "https://auth.openai.com/oauth/authorize"
	if !r.driver.ProgressLogin(mid, mc.PhaseWaitingForUser, page) {
		t.Fatal("no machine")
	}
	got := waitLogin(t, r.store, s.ID, mc.PhaseWaitingForUser)
	if got.Login.URL != page || got.Login.UpdatedAt.IsZero() {
		t.Fatalf("session login %+v, want waiting_for_user at %s", got.Login, page)
	}
	// The sign-in page is in front of the user: the session is capturing.
	waitState(t, r.store, s.ID, mc.StateCapturing)
	r.driver.FailLogin(mid, mc.ReasonLoginCommandFailed, "Error: network unreachable", "code=[redacted]")
	failed := waitState(t, r.store, s.ID, mc.StateFailed)
	if failed.Reason != mc.ReasonLoginCommandFailed {
		t.Errorf("reason %s, want login_command_failed", failed.Reason)
	}
	evs, _ := r.store.Events(t.Context(), s.ID)
	var phases []string
	for _, e := range evs {
		if e.Reason == mc.ReasonLoginProgress {
			phases = append(phases, e.Message)
		}
	}
	if !slices.Contains(phases, "waiting_for_user "+page) {
		t.Errorf("progress events %q, want one for waiting_for_user", phases)
	}
	if last := evs[len(evs)-1]; !strings.Contains(last.Message, "Error: network unreachable | code=[redacted]") {
		t.Errorf("final event message %q, want the command's last lines", last.Message)
	}
}

func TestLoginFailsAndTimesOut(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "demo")
	r.driver.FailLogin(waitState(t, r.store, s.ID, mc.StateReady).Machine.ID, mc.ReasonLoginCommandFailed)
	if got := waitState(t, r.store, s.ID, mc.StateFailed); got.Reason != mc.ReasonLoginCommandFailed {
		t.Errorf("reason %s, want login_command_failed", got.Reason)
	}

	s2, _ := r.mgr.Start(t.Context(), "bob", "quick")
	if got := waitState(t, r.store, s2.ID, mc.StateExpired); got.Reason != mc.ReasonLoginTimeout {
		t.Errorf("reason %s, want login_timeout", got.Reason)
	}
	waitGone(t, r.driver, s2.ID)
}

// lifetimeRig is a ready session whose manager runs on a fake clock, with its
// lifetime watch waiting on that clock.
type lifetimeRig struct {
	*rig
	clock *testutil.Clock
	id    string
}

func newLifetimeRig(t *testing.T, cfg session.Config) *lifetimeRig {
	t.Helper()
	// The fake clock starts at the real time: the manager also derives real
	// deadlines (contexts) from the session's expiry.
	clock := testutil.NewClock(time.Now())
	r := &lifetimeRig{rig: newRigWithClock(t, cfg, fake.Config{}, clock), clock: clock}
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	r.id = s.ID
	machineID := waitState(t, r.store, s.ID, mc.StateReady).Machine.ID
	clock.WaitForWaiters(t, 1)
	// The login touches the session when it starts, before it first asks
	// for the login's status; after that, only a change of status would.
	testutil.WaitFor(t, 10*time.Second, "the login to start", func() error {
		if r.driver.LoginPolls(machineID) == 0 {
			return errors.New("no login status request yet")
		}
		return nil
	})
	return r
}

// advance moves the clock by d and returns the session once the lifetime
// watch has looked at it: it waits on the clock again, or the session ended.
func (r *lifetimeRig) advance(t *testing.T, d time.Duration) *mc.Session {
	t.Helper()
	r.clock.Advance(d)
	var s *mc.Session
	testutil.WaitFor(t, 10*time.Second, "the lifetime watch to look", func() error {
		var err error
		if s, err = r.store.Session(t.Context(), r.id); err != nil {
			return err
		}
		if n := r.clock.Waiters(); n != 1 && !s.State.Final() {
			return fmt.Errorf("session %s, %d waits on the clock", s.State, n)
		}
		return nil
	})
	return s
}

// TestLifetimes runs the idle timeout and the maximum lifetime on a fake
// clock: nothing waits for them to pass.
func TestLifetimes(t *testing.T) {
	t.Parallel()
	const idle, life = 10 * time.Minute, 30 * time.Minute
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		r := newLifetimeRig(t, session.Config{IdleTimeout: idle, MaxLifetime: 24 * time.Hour})
		if s := r.advance(t, idle-time.Second); s.State != mc.StateReady {
			t.Errorf("a second before the idle timeout: %s, want ready", stateOf(s))
		}
		if s := r.advance(t, 2*time.Second); s.State != mc.StateExpired || s.Reason != mc.ReasonIdleTimeout {
			t.Errorf("a second past the idle timeout: %s, want expired/idle_timeout", stateOf(s))
		}
		waitGone(t, r.driver, r.id)
	})
	t.Run("activity postpones idle", func(t *testing.T) {
		t.Parallel()
		r := newLifetimeRig(t, session.Config{IdleTimeout: idle, MaxLifetime: 24 * time.Hour})
		r.advance(t, idle-time.Minute)
		// A viewer's activity a minute before the idle timeout.
		if err := r.store.Touch(t.Context(), r.id, r.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if s := r.advance(t, 2*time.Minute); s.State != mc.StateReady {
			t.Errorf("a minute past the idle timeout, 1 min after activity: %s, want ready", stateOf(s))
		}
		if s := r.advance(t, idle); s.State != mc.StateExpired || s.Reason != mc.ReasonIdleTimeout {
			t.Errorf("idle timeout after the activity: %s, want expired/idle_timeout", stateOf(s))
		}
	})
	t.Run("max lifetime", func(t *testing.T) {
		t.Parallel()
		r := newLifetimeRig(t, session.Config{IdleTimeout: time.Hour, MaxLifetime: life})
		r.advance(t, life/2)
		if err := r.store.Touch(t.Context(), r.id, r.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if s := r.advance(t, life/2-time.Second); s.State != mc.StateReady {
			t.Errorf("a second before the maximum lifetime: %s, want ready", stateOf(s))
		}
		if s := r.advance(t, 2*time.Second); s.State != mc.StateExpired || s.Reason != mc.ReasonMaxLifetime {
			t.Errorf("past the maximum lifetime: %s, want expired/max_lifetime", stateOf(s))
		}
	})
}

func TestCloseEndsDrivenSessions(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{}, fake.Config{})
	s, _ := r.mgr.Start(t.Context(), "alice", "demo")
	waitState(t, r.store, s.ID, mc.StateReady)
	r.mgr.Close()
	got, _ := r.store.Session(t.Context(), s.ID)
	if got.State != mc.StateFailed || got.Reason != mc.ReasonControllerStop {
		t.Errorf("after close: %s/%s, want failed/controller_shutdown", got.State, got.Reason)
	}
	if ms, _ := r.driver.List(t.Context()); len(ms) != 0 {
		t.Errorf("machines left: %+v", ms)
	}
}

// TestReconcileAfterCrash simulates a controller killed with SIGKILL: live
// sessions of this replica that nothing drives, machines on the host, and
// leases; a new manager's first reconcile pass leaves nothing behind.
func TestReconcileAfterCrash(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{Replica: "r1"}, fake.Config{})
	ctx := t.Context()
	// Created before the manager began, by the process that crashed: they
	// are ended at once, however young.
	now := time.Now().UTC().Add(-time.Second)
	var ids []string
	for i, u := range []string{"u1", "u2", "u3"} {
		s := &mc.Session{ID: mc.NewID(), UserID: u, Provider: "demo", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := r.store.CreateSession(ctx, s, "r1", mc.Capacity{}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.store.Lease(ctx, "test/pool", s.ID, 0, 10); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if _, err := r.driver.Create(ctx, mc.MachineSpec{ID: mc.NewMachineID(), SessionID: s.ID, Secrets: r.key.Secrets(s.ID)}); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, s.ID)
	}
	// A machine whose session does not exist at all.
	if _, err := r.driver.Create(ctx, mc.MachineSpec{ID: mc.NewMachineID(), SessionID: mc.NewID(), Secrets: mc.NewMachineSecrets()}); err != nil {
		t.Fatal(err)
	}
	// Another replica's live session must be left alone.
	other := &mc.Session{ID: mc.NewID(), UserID: "u9", Provider: "demo", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := r.store.CreateSession(ctx, other, "r2", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}

	rep, err := r.mgr.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ms, _ := r.driver.List(ctx); len(ms) != 0 {
		t.Errorf("machines left: %+v", ms)
	}
	for _, id := range ids {
		s, _ := r.store.Session(ctx, id)
		if s.State != mc.StateFailed || s.Reason != mc.ReasonControllerRestart {
			t.Errorf("session %s: %s/%s, want failed/controller_restart", id, s.State, s.Reason)
		}
	}
	if s, _ := r.store.Session(ctx, other.ID); s.State != mc.StatePending {
		t.Errorf("other replica's session: %s, want pending", s.State)
	}
	if ls, _ := r.store.Leases(ctx, "test/pool"); len(ls) != 0 {
		t.Errorf("leases left: %+v", ls)
	}
	if len(rep.Destroyed) != 3 || rep.Reclaimed != 3 {
		t.Errorf("report %+v, want 3 destroyed, 3 reclaimed", rep)
	}
}

// TestReconcileKeepsLeasesOfMachinesOnHost: a session that ended still has
// its machine on the host while the machine is torn down (here: another
// replica's, within its destroy grace). Its address and uid leases stay
// until the machine is gone: a lease reclaimed before handed them to a new
// machine beside the old one (seen: two live machines with one uid).
func TestReconcileKeepsLeasesOfMachinesOnHost(t *testing.T) {
	t.Parallel()
	r := newRig(t, session.Config{Replica: "r1", DestroyGrace: time.Minute}, fake.Config{Cluster: true})
	ctx := t.Context()
	now := time.Now().UTC()
	s := &mc.Session{ID: mc.NewID(), UserID: "u1", Provider: "demo", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := r.store.CreateSession(ctx, s, "r2", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	got, err := r.store.Session(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.Transition(ctx, mc.Transition{ID: s.ID, From: mc.StatePending, Version: got.Version, To: mc.StateCancelled,
		Reason: mc.ReasonCancelledByAPI, Replica: "r2", At: now}); err != nil {
		t.Fatal(err)
	}
	mid := mc.NewMachineID()
	if _, err := r.driver.Create(ctx, mc.MachineSpec{ID: mid, SessionID: s.ID, Secrets: r.key.Secrets(s.ID)}); err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{s.ID, mid} {
		if _, err := r.store.Lease(ctx, "test/pool", owner, 0, 10); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := r.mgr.Reconcile(ctx); err != nil || rep.Reclaimed != 0 {
		t.Fatalf("reconcile with the machine on the host: %+v, %v; want nothing reclaimed", rep, err)
	}
	if ls, _ := r.store.Leases(ctx, "test/pool"); len(ls) != 2 {
		t.Fatalf("leases %+v, want both kept while the machine is on the host", ls)
	}
	if err := r.driver.Destroy(ctx, mid); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.mgr.Reconcile(ctx); err != nil || rep.Reclaimed != 2 {
		t.Errorf("reconcile once the machine is gone: %+v, %v; want 2 reclaimed", rep, err)
	}
}
