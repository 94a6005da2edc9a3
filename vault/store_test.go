package vault

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mc "github.com/master-controller/mc"
	mctest "github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/sqlite"
)

// newTestStore returns a real SQLite store in a file of its own, closed at the
// end of the test.
func newTestStore(tb testing.TB) mc.CredentialStore {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "mc.db"), sqlite.Options{Clock: mctest.NewClock(testNow)})
	if err != nil {
		tb.Fatalf("open sqlite store: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// TestNoPlaintextInDatabase: the database files hold ciphertext only.
func TestNoPlaintextInDatabase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mc.db")
	st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := newService(t, st, mustKeys(t, "a:"+newKeyB64(t)))
	if err := svc.Put(t.Context(), testCredential("alice", "demo")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(t.Context(), "alice", "demo", "key-1"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(path + "*")
	if err != nil || len(files) == 0 {
		t.Fatalf("got database files %v, %v", files, err)
	}
	sawRecord := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), demoSecret) {
			t.Errorf("%s holds the credential's plaintext", filepath.Base(f))
		}
		sawRecord = sawRecord || strings.Contains(string(b), "alice")
	}
	if !sawRecord {
		t.Errorf("no database file holds the record at all; the search proves nothing")
	}
}
