package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/sqlite"
)

// pool is GET /api/v1/pool's demo line.
func (c client) demoPool(tb testing.TB) mc.PoolProvider {
	tb.Helper()
	var st mc.PoolStatus
	if code := c.Do(tb, "GET", "/api/v1/pool", nil, &st); code != http.StatusOK {
		tb.Fatalf("GET /api/v1/pool: status %d", code)
	}
	for _, p := range st.Providers {
		if p.Provider == "demo" {
			return p
		}
	}
	return mc.PoolProvider{}
}

// waitPoolReady waits until the demo pool has n ready machines.
func (c client) waitPoolReady(tb testing.TB, n int) {
	tb.Helper()
	var last mc.PoolProvider
	err := testutil.Poll(tb.Context(), 120*time.Second, func() error {
		if last = c.demoPool(tb); last.Ready == n && last.Starting == 0 {
			return nil
		}
		return errorString("not yet")
	})
	if err != nil {
		tb.Fatalf("demo pool never had %d ready machines: last %+v", n, last)
	}
}

// TestPoolFreshMachine: a user signs in with demo on a pooled machine; the
// next session, for another user, gets a different pooled machine whose
// home and browser profile hold nothing of the first user, and the first
// machine is gone.
func TestPoolFreshMachine(t *testing.T) {
	env := controllerEnv(t, defaultMode())
	env["MC_POOL"] = "demo=2"
	c := startController(t, env)
	c.api.waitPoolReady(t, 2)

	cr := c.api.createSession(t, "pool-alice", "demo")
	if cr.Session.State != mc.StateReady || !cr.Session.Machine.Pooled {
		t.Fatalf("POST answered %s on %+v; want ready on a pooled machine", cr.Session.State, cr.Session.Machine)
	}
	first := readMachine(t, c.dataDir, cr.Session.ID)
	b := browsertest.New(t)
	b.Timeout = 60 * time.Second
	b.Open(cr.Viewer.URL)
	b.WaitState("connected")
	b.Timeout = 30 * time.Second
	b.WaitCanvas("the demo sign-in page", showsDemoPage)
	w, h := b.CanvasSize()
	b.ClickCanvas(w/2, h/2)
	testutil.WaitState(t, c.Store, cr.Session.ID, mc.StateCompleted, 30*time.Second)

	second := c.api.createSession(t, "pool-bob", "demo")
	if !second.Session.Machine.Pooled || second.Session.ID == cr.Session.ID {
		t.Fatalf("second session %s on %+v; want another pooled machine", second.Session.ID, second.Session.Machine)
	}
	ms := readMachine(t, c.dataDir, second.Session.ID)
	if ms.Home == first.Home || ms.Dir == first.Dir {
		t.Fatalf("second machine shares %s with the first", ms.Home)
	}
	// A confined machine's homes are on tmpfs in its own mount namespace:
	// the host sees them through its init's root.
	agentHome, profile := ms.Home, filepath.Join(ms.Home, "chromium-profile")
	if root := fmt.Sprintf("/proc/%d/root", ms.PID); isDir(filepath.Join(root, "home/browser")) {
		agentHome, profile = filepath.Join(root, "home/mc"), filepath.Join(root, "home/browser/chromium-profile")
	}
	if _, err := os.Stat(filepath.Join(agentHome, ".demo")); !os.IsNotExist(err) {
		t.Errorf("second machine's home has the demo credential directory (%v)", err)
	}
	if _, err := os.Stat(profile); err != nil {
		t.Fatalf("second machine has no profile: %v", err)
	}
	// The profile was made before the first user signed in and never
	// served a login: no page of the provider is in its history.
	_ = filepath.Walk(profile, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() < 1<<20 {
			if b, _ := os.ReadFile(path); strings.Contains(string(b), "pool-alice") {
				t.Errorf("profile file %s mentions the first user", path)
			}
		}
		return nil
	})
	err := testutil.Poll(t.Context(), 30*time.Second, func() error {
		if _, err := os.Stat(first.Dir); os.IsNotExist(err) {
			return nil
		}
		return errLeft
	})
	if err != nil {
		t.Errorf("the first machine's directory %s is still there", first.Dir)
	}
}

// TestPoolCrashRestart: the server binary with a full pool is killed with
// SIGKILL; the restarted server adopts or destroys every pooled machine
// (nothing is leaked) and the pool is full again.
func TestPoolCrashRestart(t *testing.T) {
	env := controllerEnv(t, defaultMode())
	env["MC_POOL"] = "demo=2"
	env["MC_RECONCILE_INTERVAL"] = "1h"
	first := startServer(t, env)
	first.api.waitPoolReady(t, 2)

	st, err := sqlite.Open(t.Context(), filepath.Join(env["MC_DATA_DIR"], "mc.db"), sqlite.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open the server's store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	before, err := st.PooledMachines(t.Context(), "")
	if err != nil || len(before) != 2 {
		t.Fatalf("pool rows: %+v, %v; want 2", before, err)
	}
	machines := make([]machineState, len(before))
	for i, p := range before {
		machines[i] = readMachine(t, env["MC_DATA_DIR"], p.ID)
	}
	first.Kill()
	for _, ms := range machines {
		if len(leftovers(t, st, ms)) == 0 {
			t.Fatalf("after SIGKILL, pooled machine %s has nothing on the host; the test proves nothing", ms.ID)
		}
	}

	second := startServer(t, env)
	rec := second.waitLog(t, "reconciled", 60*time.Second)
	t.Logf("restart reconcile: adopted %v, destroyed %v, reclaimed %v", rec["adopted"], rec["destroyed"], rec["reclaimed"])
	second.api.waitPoolReady(t, 2)

	after, err := st.PooledMachines(context.Background(), "")
	if err != nil || len(after) != 2 {
		t.Fatalf("pool rows after the restart: %+v, %v; want 2", after, err)
	}
	inPool := map[string]bool{}
	for _, p := range after {
		inPool[p.ID] = true
	}
	for _, ms := range machines {
		if inPool[ms.ID] {
			continue // adopted: it serves the pool
		}
		if left := leftovers(t, st, ms); len(left) > 0 {
			t.Errorf("pooled machine %s is neither in the pool nor gone: %s", ms.ID, strings.Join(left, "; "))
		}
	}
	leases, err := st.Leases(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if !inPool[l.Owner] {
			t.Errorf("lease %+v is held by no pooled machine", l)
		}
	}
	// A claim from the adopted pool works.
	cr := second.api.createSession(t, "crash-pool-user", "demo")
	if !cr.Session.Machine.Pooled || cr.Session.State != mc.StateReady {
		t.Errorf("after the restart: %s on %+v, want ready on a pooled machine", cr.Session.State, cr.Session.Machine)
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
