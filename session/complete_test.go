package session_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
)

// slowAckStore answers a transition to completed only after the session's
// own watch has seen it: as a store whose reply comes after its change
// notification (PostgreSQL's NOTIFY beats the commit's acknowledgement).
// If the caller's context is cancelled meanwhile, the reply is that error,
// as a database driver's would be.
type slowAckStore struct{ mc.Store }

func (s slowAckStore) Transition(ctx context.Context, t mc.Transition) (*mc.Session, error) {
	got, err := s.Store.Transition(ctx, t)
	if err != nil || t.To != mc.StateCompleted {
		return got, err
	}
	// Wait, bounded, for the watch to cut ctx; it must not.
	if testutil.Poll(context.Background(), 2*time.Second, func() error {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("not cancelled")
	}) == nil {
		return nil, ctx.Err()
	}
	return got, nil
}

// TestCompletionNotCutByItsOwnWatch: the session's watch sees the completed
// state before the store's reply to the write that made it; the write still
// counts as done (the transition metric, the destroy grace), and is not
// taken for a store outage. Found by the soak test (7 % of completions).
func TestCompletionNotCutByItsOwnWatch(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := fake.New(fake.Config{})
	reg := prometheus.NewRegistry()
	mgr := session.New(session.Config{Replica: "r1", LoginPoll: 10 * time.Millisecond, DestroyGrace: time.Millisecond},
		session.Deps{Store: slowAckStore{st}, Driver: drv, Providers: testProviders, Vault: &recordingVault{}, Registry: reg})
	t.Cleanup(func() { mgr.Close() })
	s, err := mgr.Start(t.Context(), "alice", "demo")
	if err != nil {
		t.Fatal(err)
	}
	ready := waitState(t, st, s.ID, mc.StateReady)
	if !drv.CompleteLogin(ready.Machine.ID, map[string]string{"~/.demo/credentials.json": `{"access_token":"demo-x"}`}) {
		t.Fatal("no machine")
	}
	waitState(t, st, s.ID, mc.StateCompleted)
	testutil.WaitFor(t, 10*time.Second, "the completion counted", func() error {
		if n := counter(t, reg, "mc_session_transitions_total", "state", "completed"); n != 1 {
			return fmt.Errorf("got %v completed transitions counted", n)
		}
		return nil
	})
	if n := counter(t, reg, "mc_session_refusals_total", "reason", string(mc.ReasonStoreUnreachable)); n != 0 {
		t.Errorf("got %v store_unreachable refusals, want none: the completion was taken for a store outage", n)
	}
}

// counter sums the counters name of reg whose label has value.
func counter(tb testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
