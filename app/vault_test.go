package app_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/app"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/vault"
)

// TestVaultRotateCommand: seal under key A, add key B first, run the
// rotate command, drop A, read everything back.
func TestVaultRotateCommand(t *testing.T) {
	ka, _ := vault.NewKeyring("a")
	kb, _ := vault.NewKeyring("b")
	dir := t.TempDir()
	db := filepath.Join(dir, "mc.db")
	ctx := context.Background()

	st, err := sqlite.Open(ctx, db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := vault.NewService(vault.New(ka), st, vault.Options{})
	for _, u := range []string{"u1", "u2", "u3"} {
		if err := svc.Put(ctx, mc.Credential{UserID: u, Provider: "demo", SessionID: mc.NewID(), CapturedAt: time.Now(),
			Files: map[string]string{"~/.demo/credentials.json": `{"access_token":"secret-` + u + `"}`}}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	cfg := app.DefaultConfig()
	cfg.DataDir, cfg.DatabaseURL = dir, db
	cfg.VaultKeys = kb.Encode() + "," + ka.Encode()
	n, err := app.RotateVault(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil || n != 3 {
		t.Fatalf("rotate: %d, %v; want 3", n, err)
	}

	st, err = sqlite.Open(ctx, db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	onlyB := vault.NewService(vault.New(kb), st, vault.Options{})
	for _, u := range []string{"u1", "u2", "u3"} {
		c, err := onlyB.Get(ctx, u, "demo", "test")
		if err != nil {
			t.Fatalf("read %s under b alone: %v", u, err)
		}
		if got := c.Files["~/.demo/credentials.json"]; got != `{"access_token":"secret-`+u+`"}` {
			t.Errorf("%s: got %q", u, got)
		}
	}
}

// TestServeRefusesMissingVaultKey: with sealed records in the store, a
// server whose keys cannot open them refuses to start and names the key ids
// the records need; with no key configured, it does not generate one over
// them (the old behaviour: a fresh key with the same id "k1", a server that
// said ready, and a 500 on every credential read).
func TestServeRefusesMissingVaultKey(t *testing.T) {
	ka, _ := vault.NewKeyring("k1")
	kb, _ := vault.NewKeyring("other")
	dir := t.TempDir()
	db := filepath.Join(dir, "mc.db")
	st, err := sqlite.Open(t.Context(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := vault.NewService(vault.New(ka), st, vault.Options{})
	if err := svc.Put(t.Context(), mc.Credential{UserID: "u1", Provider: "demo", CapturedAt: time.Now(),
		Files: map[string]string{"f": "x"}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	for name, keys := range map[string]string{"no key configured": "", "another key": kb.Encode()} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"MC_LISTEN": "127.0.0.1:0", "MC_DATA_DIR": dir, "MC_DATABASE_URL": db, "MC_DRIVER": "fake",
				"MC_API_KEYS": "test-key-0123456789abcdef", "MC_WEB_DIR": "../web", "MC_VAULT_KEYS": strings.TrimSpace(keys)}
			var cfg app.Config
			problems := cfg.Flags(flagSet(), func(k string) string { return env[k] })
			if problems = append(problems, cfg.Validate()...); len(problems) > 0 {
				t.Fatalf("config: %v", problems)
			}
			m, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler), io.Discard)
			if err == nil {
				m.Close()
				t.Fatal("the server started with a vault key that cannot open the stored credentials")
			}
			if mc.ErrorReason(err) != vault.ReasonKeyMissing || !strings.Contains(err.Error(), "key id(s) k1") {
				t.Errorf("got %v, want %s naming k1", err, vault.ReasonKeyMissing)
			}
			if _, err := os.Stat(filepath.Join(dir, vault.KeyFileName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a vault key was generated over sealed records: %v", err)
			}
		})
	}
}
