package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/storetest"
)

func open(tb testing.TB, path string, opts sqlite.Options) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path, opts)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "mc.db")
		return func(t *testing.T) mc.Store { return open(t, path, sqlite.Options{}) }
	})
}

func TestMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mc.db")
	s := open(t, path, sqlite.Options{NoMigrate: true})
	for range 2 {
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	// A second Store on a migrated file migrates nothing and works.
	s2 := open(t, path, sqlite.Options{})
	if err := s2.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != 8 {
		t.Fatalf("got %d migrations recorded, %v, want 8", n, err)
	}
	for _, table := range []string{"sessions", "session_events", "leases", "credentials", "audit", "slots", "pool_machines", "replicas", "space_probe"} {
		if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: got %d, %v, want it to exist", table, n, err)
		}
	}
	wantNoStoredSecrets(t, db)
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("got journal_mode %q, %v, want wal", mode, err)
	}
}

func TestOpenRefusesMemory(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file::memory:"} {
		if _, err := sqlite.Open(t.Context(), p, sqlite.Options{}); mc.ErrorCode(err) != mc.EINVALID {
			t.Errorf("open %q: got %v, want EINVALID", p, err)
		}
	}
}

func TestClosedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mc.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sess := storetest.NewSession("u1", "demo", time.Time{})
	if err := s.CreateSession(t.Context(), sess, "r1", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Error("got a value after Close, want the watch closed")
	}
	_, err = s.Session(t.Context(), sess.ID)
	if code := mc.ErrorCode(err); code != mc.EUNAVAILABLE {
		t.Errorf("got %v (%s) from a closed store, want %s", err, code, mc.EUNAVAILABLE)
	}
}

func BenchmarkSession(b *testing.B) {
	storetest.BenchmarkSession(b, open(b, filepath.Join(b.TempDir(), "mc.db"), sqlite.Options{}))
}

func BenchmarkTransition(b *testing.B) {
	storetest.BenchmarkTransition(b, open(b, filepath.Join(b.TempDir(), "mc.db"), sqlite.Options{}))
}

// TestMigrateCountsLiveSessions: a database made before the slots table
// (version 1) gets its live sessions counted, per replica, by migration 2.
func TestMigrateCountsLiveSessions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mc.db")
	s := open(t, path, sqlite.Options{})
	for i, replica := range []string{"r1", "r1", "r2", "r2"} {
		sess := storetest.NewSession(fmt.Sprint("u", i), "demo", time.Time{})
		if err := s.CreateSession(t.Context(), sess, replica, mc.Capacity{}); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			if _, err := s.Transition(t.Context(), mc.Transition{ID: sess.ID, From: mc.StatePending, Version: 1,
				To: mc.StateCancelled, Replica: replica}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DROP TABLE slots; DELETE FROM schema_migrations WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = open(t, path, sqlite.Options{})
	for replica, want := range map[string]int{"": 3, "r1": 2, "r2": 1} {
		if got, err := s.CountActive(t.Context(), replica); err != nil || got != want {
			t.Errorf("CountActive(%q) after migrating: got %d, %v, want %d", replica, got, err, want)
		}
	}
}

// TestMigrateDropsStoredSecrets: a database from before machine secrets
// were derived has session columns and a table for secrets; migration 8
// drops them, and the sessions stay readable.
func TestMigrateDropsStoredSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mc.db")
	s := open(t, path, sqlite.Options{})
	sess := storetest.NewSession("u1", "demo", time.Time{})
	if err := s.CreateSession(t.Context(), sess, "r1", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	// Back to version 7: the columns and the table as they were.
	if _, err := db.Exec(`DROP TABLE space_probe;
		ALTER TABLE sessions ADD COLUMN vnc_password TEXT NOT NULL DEFAULT '';
		ALTER TABLE sessions ADD COLUMN agent_token TEXT NOT NULL DEFAULT '';
		CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL, created_at INTEGER NOT NULL) STRICT;
		DELETE FROM schema_migrations WHERE version = 8`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = open(t, path, sqlite.Options{})
	if got, err := s.Session(t.Context(), sess.ID); err != nil || got.ID != sess.ID {
		t.Fatalf("got %v, %v after migrating, want the session", got, err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	wantNoStoredSecrets(t, ro)
}

// wantNoStoredSecrets fails if db has a place for a secret: the sessions'
// machine-secret columns or the secrets table.
func wantNoStoredSecrets(tb testing.TB, db *sql.DB) {
	tb.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pragma_table_info('sessions') WHERE name IN ('vnc_password', 'agent_token')`).Scan(&n); err != nil || n != 0 {
		tb.Errorf("got %d secret columns in sessions, %v, want 0", n, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'secrets'`).Scan(&n); err != nil || n != 0 {
		tb.Errorf("got %d secrets tables, %v, want 0", n, err)
	}
}
