package app_test

import (
	"context"
	"log/slog"
	"path/filepath"
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
