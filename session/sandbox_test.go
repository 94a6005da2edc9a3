package session_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/session"
)

// newSandboxRig is a rig whose manager reports to a registry of its own.
func newSandboxRig(t *testing.T, cfg session.Config, fc fake.Config) (*rig, *prometheus.Registry) {
	t.Helper()
	r := newRig(t, session.Config{}, fc)
	r.mgr.Close()
	reg := prometheus.NewRegistry()
	cfg.Replica, cfg.DestroyGrace, cfg.LoginPoll = "r1", time.Millisecond, 10*time.Millisecond
	r.mgr = session.New(cfg, session.Deps{Store: r.store, Driver: r.driver, Providers: testProviders, Vault: r.vault,
		MachineKey: r.key, Registry: reg})
	t.Cleanup(func() { r.mgr.Close() })
	return r, reg
}

// TestBrowserSandbox: every new machine's chrome://sandbox is read; a
// session whose browser lacks its sandbox fails browser_unsandboxed and its
// machine is destroyed; a sandboxed one goes on to complete.
func TestBrowserSandbox(t *testing.T) {
	for _, sandboxed := range []bool{true, false} {
		t.Run(fmt.Sprint("sandboxed=", sandboxed), func(t *testing.T) {
			r, reg := newSandboxRig(t, session.Config{}, fake.Config{Unsandboxed: !sandboxed})
			s, err := r.mgr.Start(t.Context(), "alice", "demo")
			if err != nil {
				t.Fatal(err)
			}
			// (Unsandboxed, it may be failed by the time it is watched.)
			mid := testutil.WaitSession(t, r.store, s.ID, 10*time.Second, "ready", func(s *mc.Session) bool {
				return s.Machine.ID != "" && (s.State == mc.StateReady || s.State.Final())
			}).Machine.ID
			result := "sandboxed"
			if !sandboxed {
				result = string(mc.ReasonBrowserUnsandboxed)
			}
			// The check runs beside the session (one that ends first is
			// not counted).
			testutil.WaitFor(t, 10*time.Second, "the check counted", func() error {
				if got := metricValue(t, reg, "mc_browser_sandbox_checks_total", map[string]string{"result": result}); got != 1 {
					return fmt.Errorf("mc_browser_sandbox_checks_total{result=%q} = %v, want 1", result, got)
				}
				return nil
			})
			if !sandboxed {
				got := waitState(t, r.store, s.ID, mc.StateFailed)
				if got.Reason != mc.ReasonBrowserUnsandboxed {
					t.Errorf("reason %s, want browser_unsandboxed", got.Reason)
				}
				evs, err := r.store.Events(t.Context(), s.ID)
				if err != nil || len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Message, "Layer 1 Sandbox") {
					t.Errorf("events %+v, %v; want the last to say what is missing", evs, err)
				}
				testutil.WaitFor(t, 10*time.Second, "the machine destroyed", func() error {
					if _, err := r.driver.Inspect(t.Context(), mid); mc.ErrorCode(err) != mc.ENOTFOUND {
						return fmt.Errorf("machine %s: %v", mid, err)
					}
					return nil
				})
			} else {
				r.driver.CompleteLogin(mid, map[string]string{"~/.demo/credentials.json": `{"token":"t"}`})
				if got := waitState(t, r.store, s.ID, mc.StateCompleted); got.Reason != mc.ReasonSignedIn {
					t.Errorf("reason %s, want signed_in", got.Reason)
				}
			}
		})
	}
}

// TestPoolBrowserSandbox: a pooled machine whose browser lacks its sandbox
// is never offered: it is retired browser_unsandboxed before it is ready,
// and a session that asks meanwhile starts cold.
func TestPoolBrowserSandbox(t *testing.T) {
	r, reg := newSandboxRig(t, session.Config{Pool: map[string]int{"demo": 1}}, fake.Config{Unsandboxed: true})
	runPool(t, r)
	testutil.WaitFor(t, 10*time.Second, "the pooled machine retired", func() error {
		if got := metricValue(t, reg, "mc_pool_retired_total", map[string]string{"reason": string(mc.ReasonBrowserUnsandboxed)}); got < 1 {
			return fmt.Errorf("mc_pool_retired_total{reason=browser_unsandboxed} = %v", got)
		}
		return nil
	})
	list, err := r.store.PooledMachines(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.State == mc.PoolReady {
			t.Errorf("pooled machine %s is offered", p.ID)
		}
	}
	s, err := r.mgr.Start(t.Context(), "alice", "demo")
	if err != nil || s.Machine.Pooled {
		t.Errorf("start: %+v, %v; want a cold start", s, err)
	}
}
