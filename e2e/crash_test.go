package e2e_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/sqlite"
)

// TestCrashRestart is issue 3's crash test: the server binary starts 5
// sessions, is killed with SIGKILL (its machines live on: they are process
// groups of their own), and is started again with the same data directory
// and replica name. By the end of its start-up reconcile pass nothing remains
// of the 5 machines (namespaces, processes, directories, leases) and their
// sessions are failed with reason controller_restart.
func TestCrashRestart(t *testing.T) {
	const n = 5
	env := controllerEnv(t, defaultMode())
	// Only the start-up pass runs within the test: the periodic one is an
	// hour away, so whatever is gone was removed by that one pass.
	env["MC_RECONCILE_INTERVAL"] = "1h"
	first := startServer(t, env)

	ids := make([]string, n)
	for i := range ids {
		ids[i] = first.api.createSession(t, fmt.Sprintf("crash-user-%d", i), "demo").Session.ID
	}
	machineIDs := make([]string, n)
	deadline := time.Now().Add(90 * time.Second)
	for i, id := range ids {
		var s mc.Session
		err := testutil.Poll(t.Context(), time.Until(deadline), func() error {
			s = first.api.session(t, id)
			if s.State == mc.StateReady || s.State.Final() {
				return nil
			}
			return errorString("state " + string(s.State))
		})
		if err != nil || s.State != mc.StateReady {
			t.Fatalf("session %s: %s (reason %q), want ready (%v)", id, s.State, s.Reason, err)
		}
		machineIDs[i] = s.Machine.ID
	}

	// The test's own view of the store: the same SQLite file.
	st, err := sqlite.Open(t.Context(), filepath.Join(env["MC_DATA_DIR"], "mc.db"), sqlite.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open the server's store: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	machines := make([]machineState, n)
	for i, id := range machineIDs {
		machines[i] = readMachine(t, env["MC_DATA_DIR"], id)
	}

	first.Kill()
	// Should the test stop before the second server's reconcile pass, the
	// machines that outlived the first must not outlive the test.
	t.Cleanup(func() {
		if t.Failed() {
			for _, ms := range machines {
				sweepMachine(ms)
			}
		}
	})

	// The machines outlived their controller: each still has everything.
	for _, ms := range machines {
		left := strings.Join(leftovers(t, st, ms), "; ")
		for _, k := range []string{"processes", "directory", "lease"} {
			if !strings.Contains(left, k+" ") {
				t.Errorf("after SIGKILL, machine %s has no %s (has: %s); the test proves nothing for it", ms.ID, k, left)
			}
		}
		if ms.Namespace != "" && !strings.Contains(left, "namespace ") {
			t.Errorf("after SIGKILL, machine %s has no namespace (has: %s)", ms.ID, left)
		}
	}
	for _, id := range ids {
		if s, err := st.Session(t.Context(), id); err != nil || s.State != mc.StateReady {
			t.Fatalf("after SIGKILL, session %s: %v, %v; want ready", id, s, err)
		}
	}

	second := startServer(t, env)
	rec := second.waitLog(t, "reconciled", 60*time.Second)
	t.Logf("restart reconcile: destroyed %v, failed %v, reclaimed %v", rec["destroyed"], rec["failed"], rec["reclaimed"])

	// Checked once, right after the pass: no polling.
	for _, ms := range machines {
		if left := leftovers(t, st, ms); len(left) > 0 {
			t.Errorf("after the restart's reconcile pass, machine %s still has: %s", ms.ID, strings.Join(left, "; "))
		}
	}
	for _, id := range ids {
		s := second.api.session(t, id)
		if s.State != mc.StateFailed || s.Reason != mc.ReasonControllerRestart {
			t.Errorf("session %s is %s (reason %q), want failed (controller_restart)", id, s.State, s.Reason)
		}
	}
	if got, ok := rec["destroyed"].(float64); !ok || int(got) != n {
		t.Errorf("the reconcile pass destroyed %v machines, want %d", rec["destroyed"], n)
	}
	if leases, err := st.Leases(t.Context(), ""); err != nil || len(leases) != 0 {
		t.Errorf("leases after the restart: %+v, %v; want none", leases, err)
	}
}
