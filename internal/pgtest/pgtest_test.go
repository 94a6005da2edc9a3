package pgtest_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/master-controller/mc/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestShared(t *testing.T) {
	t.Parallel()
	a, b := pgtest.Shared(t), pgtest.Shared(t)
	if a == b {
		t.Fatalf("got one database twice (%s), want two", a)
	}
	for _, url := range []string{a, b} {
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		var v string
		if err := conn.QueryRow(t.Context(), "SHOW server_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		t.Logf("server_version %s", v)
		conn.Close(t.Context())
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	url := pgtest.Start(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("got %d, %v, want 1", one, err)
	}
}
