package postgres_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(tb testing.TB, url string, opts postgres.Options) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), url, opts)
	if err != nil {
		tb.Fatalf("open postgres: %v", err)
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
		url := pgtest.Shared(t)
		return func(t *testing.T) mc.Store { return open(t, url, postgres.Options{}) }
	})
}

func TestMigrate(t *testing.T) {
	url := pgtest.Shared(t)
	s := open(t, url, postgres.Options{NoMigrate: true})
	for range 2 {
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	// Replicas that start together migrate once.
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := postgres.Open(t.Context(), url, postgres.Options{})
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != 8 {
		t.Fatalf("got %d migrations recorded, %v, want 8", n, err)
	}
	for _, table := range []string{"sessions", "session_events", "leases", "credentials", "audit", "slots", "pool_machines", "replicas"} {
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = $1`, table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: got %d, %v, want it to exist", table, n, err)
		}
	}
	// Machine secrets are derived (migration 8 dropped where they were kept).
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'secrets'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("got %d secrets tables, %v, want 0", n, err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'
		AND table_name = 'sessions' AND column_name IN ('vnc_password', 'agent_token')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("got %d secret columns in sessions, %v, want 0", n, err)
	}
}

// TestListenerReconnect kills the listening connection of store a, changes
// the session through store b while a is deaf, and expects a's watcher to
// get the change once a has reconnected.
func TestListenerReconnect(t *testing.T) {
	url := pgtest.Shared(t)
	a, b := open(t, url, postgres.Options{}), open(t, url, postgres.Options{})
	sess := storetest.NewSession("u1", "demo", time.Time{})
	if err := b.CreateSession(t.Context(), sess, "r1", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	ch, err := a.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Both stores' listeners go: b's reconnect must not matter here, a's
	// must re-deliver.
	var killed int
	if err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, postgres.ListenerApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 2 {
		t.Fatalf("got %d listeners terminated, want 2", killed)
	}
	next, err := b.Transition(t.Context(), mc.Transition{ID: sess.ID, From: mc.StatePending, Version: 1, To: mc.StateStarting, Replica: "b"})
	if err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case got := <-ch:
		if got.State != mc.StateStarting || got.Version != next.Version {
			t.Fatalf("got %s v%d, want starting v%d", got.State, got.Version, next.Version)
		}
	case <-timer.C:
		t.Fatal("change not delivered after the listener reconnected")
	}
	// And the new listener hears later changes.
	if _, err := b.Transition(t.Context(), mc.Transition{ID: sess.ID, From: mc.StateStarting, Version: next.Version, To: mc.StateReady, Replica: "b"}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if got.State != mc.StateReady {
			t.Fatalf("got %s, want ready", got.State)
		}
	case <-timer.C:
		t.Fatal("change after reconnect not delivered")
	}
}

func TestOpenBadURL(t *testing.T) {
	_, err := postgres.Open(t.Context(), "postgres://user:hunter2@[bad", postgres.Options{})
	if mc.ErrorCode(err) != mc.EINVALID {
		t.Fatalf("got %v, want EINVALID", err)
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %q shows the password", err)
	}
}

func BenchmarkSession(b *testing.B) {
	storetest.BenchmarkSession(b, open(b, pgtest.Shared(b), postgres.Options{}))
}

func BenchmarkTransition(b *testing.B) {
	storetest.BenchmarkTransition(b, open(b, pgtest.Shared(b), postgres.Options{}))
}

// TestOpenUnreachable: a server that does not answer is EUNAVAILABLE
// store_unreachable, and the error does not show the URL's password.
func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = postgres.Open(t.Context(), "postgres://mc:hunter2@"+addr+"/mc?sslmode=disable&connect_timeout=5", postgres.Options{})
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != "store_unreachable" {
		t.Fatalf("got %v, want unavailable (store_unreachable)", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %q shows the password", err)
	}
}
