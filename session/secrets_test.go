package session_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// secretsDriver records the secrets each machine was created with.
type secretsDriver struct {
	*fake.Driver
	mu      sync.Mutex
	secrets map[string]mc.MachineSecrets
}

func (d *secretsDriver) Create(ctx context.Context, spec mc.MachineSpec) (mc.Machine, error) {
	d.mu.Lock()
	d.secrets[spec.ID] = spec.Secrets
	d.mu.Unlock()
	return d.Driver.Create(ctx, spec)
}

// TestNoMachineSecretsAtRest runs 20 sessions to their end and then looks
// for their machines' VNC passwords and agent tokens in the database: the
// SQLite file and its WAL, and a pg_dump of a PostgreSQL store. There must
// be none (they used to be stored in plaintext and kept forever).
func TestNoMachineSecretsAtRest(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		st, err := sqlite.Open(t.Context(), filepath.Join(dir, "mc.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		checkNoSecretsAtRest(t, st, func() []byte {
			var all []byte
			files, _ := filepath.Glob(filepath.Join(dir, "mc.db*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, b...)
			}
			if len(files) < 2 {
				t.Fatalf("database files %v, want the file and its WAL", files)
			}
			return all
		})
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.Shared(t)
		st, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		checkNoSecretsAtRest(t, st, func() []byte {
			bin, err := exec.LookPath("pg_dump")
			if err != nil {
				bin = "/usr/lib/postgresql/15/bin/pg_dump"
			}
			out, err := exec.CommandContext(t.Context(), bin, "--dbname="+url).Output()
			if err != nil {
				t.Fatalf("pg_dump: %v", err)
			}
			return out
		})
	})
}

func checkNoSecretsAtRest(t *testing.T, st mc.Store, dump func() []byte) {
	const sessions = 20
	drv := &secretsDriver{Driver: fake.New(fake.Config{}), secrets: map[string]mc.MachineSecrets{}}
	mgr := session.New(session.Config{Replica: "r1", DestroyGrace: time.Millisecond, LoginPoll: 10 * time.Millisecond},
		session.Deps{Store: st, Driver: drv, Providers: testProviders, Vault: &recordingVault{}})
	var ids []string
	for i := range sessions {
		s, err := mgr.Start(t.Context(), "user-"+string(rune('a'+i)), "demo")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	for i, id := range ids {
		ready := waitState(t, st, id, mc.StateReady)
		if i%2 == 0 {
			drv.CompleteLogin(ready.Machine.ID, map[string]string{"~/.demo/credentials.json": `{"token":"x"}`})
			waitState(t, st, id, mc.StateCompleted)
		} else {
			if _, err := mgr.Cancel(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
	}
	mgr.Close() // every session's goroutine has ended
	for _, id := range ids {
		if s, err := st.Session(t.Context(), id); err != nil || !s.State.Final() {
			t.Fatalf("session %s: %v %v, want a final state", id, s, err)
		}
	}
	db := dump()
	drv.mu.Lock()
	defer drv.mu.Unlock()
	if len(drv.secrets) != sessions {
		t.Fatalf("%d machines recorded, want %d", len(drv.secrets), sessions)
	}
	found := 0
	for id, sec := range drv.secrets {
		for what, v := range map[string]mc.Secret{"VNC password": sec.VNCPassword, "agent token": sec.AgentToken} {
			if v.IsZero() {
				t.Fatalf("machine %s had no %s", id, what)
			}
			if bytes.Contains(db, []byte(v.Reveal())) {
				found++
				t.Errorf("the %s of machine %s is in the database", what, id)
			}
		}
	}
	if found > 0 {
		t.Errorf("%d machine secrets at rest", found)
	}
}
