package e2e_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/master-controller/mc/app"
	"github.com/master-controller/mc/internal/testutil"
)

// TestDoctorMachine: "master-controller doctor --machine" starts a real
// confined machine, finds it ready and its browser sandboxed (the layers
// its chrome://sandbox shows), and leaves nothing of it behind.
func TestDoctorMachine(t *testing.T) {
	requireConfinement(t)
	env := controllerEnv(t, defaultMode())
	logs := &testutil.SyncBuffer{}
	found := app.TryMachine(t.Context(), config(t, env), slog.New(slog.NewJSONHandler(logs, nil)))
	got := map[string]string{}
	for _, f := range found {
		if !f.OK {
			t.Errorf("doctor: %s: %s", f.Name, f.Value)
		}
		got[f.Name] = f.Value
	}
	if !strings.HasPrefix(got["machine"], "ready in ") || !strings.Contains(got["machine"], "isolation "+defaultMode()) {
		t.Errorf("machine: %q, want ready in netns isolation", got["machine"])
	}
	if !strings.Contains(got["sandbox"], "Layer 1 Sandbox: Namespace") || !strings.Contains(got["sandbox"], "Seccomp-BPF sandbox: Yes") {
		t.Errorf("sandbox: %q, want the namespace and seccomp layers", got["sandbox"])
	}
	// The local driver's machines directory, made when it started.
	left, err := os.ReadDir(filepath.Join(env["MC_DATA_DIR"], "machines"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("the doctor's machine is left: %v", left)
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs.String())
	}
}
