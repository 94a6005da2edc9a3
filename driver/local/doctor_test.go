package local_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/master-controller/mc/driver/local"
)

// TestDoctorCLIs: doctor looks for the provider CLIs where the login
// commands find them (CLIDir), not on the controller's PATH.
func TestDoctorCLIs(t *testing.T) {
	clis := func(cfg local.Config) string {
		for _, f := range local.Doctor(cfg) {
			if f.Name == "clis" {
				return f.Value
			}
		}
		t.Fatal("doctor has no clis line")
		return ""
	}
	dir := t.TempDir()
	t.Setenv("PATH", t.TempDir())
	if got := clis(local.Config{CLIDir: dir}); !strings.HasPrefix(got, "none of") {
		t.Errorf("empty CLI directory: clis = %q, want none", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "codex"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := clis(local.Config{CLIDir: dir}); got != filepath.Join(dir, "codex") {
		t.Errorf("clis = %q, want %s", got, filepath.Join(dir, "codex"))
	}
}
