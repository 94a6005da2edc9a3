package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/master-controller/mc/internal/atomicfile"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, data := range []string{"first\n", "second, longer\n"} {
		if err := atomicfile.Write(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != data {
			t.Errorf("got %q %v, want %q", b, err, data)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("got mode %v %v, want 0600", fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("got %d files, want no temporary file left", len(entries))
	}
	if err := atomicfile.Write(filepath.Join(dir, "no", "such", "dir"), nil, 0o600); err == nil {
		t.Error("got no error for a missing directory")
	}
}
