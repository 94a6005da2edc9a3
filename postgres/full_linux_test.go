package postgres_test

import (
	"context"
	"os"
	"os/user"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/storetest"
)

// TestDiskFull puts the database's tables in a tablespace on a tiny tmpfs
// and fills it: inserts fail with 53100, which the store answers as
// EUNAVAILABLE store_full; Ping fails the same way (its probe creates a
// relation) until there is space again (issue 11, item 3).
func TestDiskFull(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		// pgtest runs the cluster as postgres when root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("no user postgres")
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	disk := storetest.TinyDisk(t, "8m", uid, gid) // unmounted after the cluster stops
	url := pgtest.Start(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLESPACE small LOCATION '` + disk + `'`,
		`ALTER DATABASE postgres SET default_tablespace = small`,
	} {
		if _, err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	conn.Close(context.Background())

	// An update may still fit in a page it has, so only creating (which
	// needs new pages) is sure to fail.
	storetest.DiskFull(t, open(t, url, postgres.Options{}), disk, nil)
}
