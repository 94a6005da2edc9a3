package app_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/master-controller/mc/app"
	"github.com/master-controller/mc/internal/testutil"
)

// TestAPIKeysNeverNone checks that a controller never starts with no API key
// (it would answer 401 to everything, without a word): an API key setting or
// file that is given but empty stops the start with an error that names it,
// and an empty <data-dir>/api-keys gets a generated key, as on first start,
// with a log line that says so.
func TestAPIKeysNeverNone(t *testing.T) {
	newMain := func(t *testing.T, dir string, env map[string]string) (*app.Main, string, error) {
		t.Helper()
		base := map[string]string{"MC_LISTEN": "127.0.0.1:0", "MC_DATA_DIR": dir, "MC_DRIVER": "fake",
			"MC_WEB_DIR": "../web"}
		for k, v := range env {
			base[k] = v
		}
		var cfg app.Config
		problems := cfg.Flags(flagSet(), func(k string) string { return base[k] })
		if problems = append(problems, cfg.Validate()...); len(problems) > 0 {
			t.Fatalf("config: %v", problems)
		}
		logs := &testutil.SyncBuffer{}
		m, err := app.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)), io.Discard)
		if err == nil {
			t.Cleanup(func() { _ = m.Close() })
		}
		return m, logs.String(), err
	}

	t.Run("empty keys file refuses to start", func(t *testing.T) {
		dir := t.TempDir()
		f := filepath.Join(dir, "keys")
		if err := os.WriteFile(f, []byte("# keys\n\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := newMain(t, dir, map[string]string{"MC_API_KEYS_FILE": f})
		if err == nil || !strings.Contains(err.Error(), "MC_API_KEYS_FILE") || !strings.Contains(err.Error(), "no API key") {
			t.Errorf("got %v, want an error that MC_API_KEYS_FILE holds no API key", err)
		}
	})
	t.Run("keys setting without a key refuses to start", func(t *testing.T) {
		_, _, err := newMain(t, t.TempDir(), map[string]string{"MC_API_KEYS": " , "})
		if err == nil || !strings.Contains(err.Error(), "MC_API_KEYS holds no API key") {
			t.Errorf("got %v, want an error that MC_API_KEYS holds no API key", err)
		}
	})
	t.Run("empty generated file gets a key", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, app.APIKeysFileName)
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		m, logs, err := newMain(t, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		key := m.GeneratedAPIKey.Reveal()
		b, _ := os.ReadFile(path)
		if key == "" || strings.TrimSpace(string(b)) != key {
			t.Fatalf("got generated key %d characters, file %d bytes; want a key written to the file", len(key), len(b))
		}
		if !strings.Contains(logs, `"msg":"generated an API key"`) || !strings.Contains(logs, `"reason":"the file held no key"`) {
			t.Errorf("got log %s, want a line that a key was generated because the file held none", logs)
		}
		if strings.Contains(logs, key) {
			t.Error("the generated key reached the log")
		}
	})
	t.Run("first start generates a key", func(t *testing.T) {
		m, logs, err := newMain(t, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.GeneratedAPIKey.IsZero() || !strings.Contains(logs, `"reason":"first start"`) {
			t.Errorf("got no generated key or no log line saying first start: %s", logs)
		}
	})
}
