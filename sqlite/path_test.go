package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/master-controller/mc/sqlite"
)

// TestOddPath: the file lands exactly at the given path, whatever characters
// it holds.
func TestOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%20chars")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mc.db")
	s := open(t, path, sqlite.Options{})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at %s: %v", path, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("got %v beside the directory, want only it", names)
	}
}
