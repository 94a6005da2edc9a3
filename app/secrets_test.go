package app_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/vault"
)

// TestNoSigningKeyOrMachineSecretInStore: the viewer-token signing key is
// derived from the vault keys, not kept in the store (it used to be a
// plaintext row "viewer_token_key"); the machine's VNC password, derived
// the same way by the gateway, still opens the machine; and after the
// session, the database files hold neither the signing key nor the
// machine's secrets.
func TestNoSigningKeyOrMachineSecretInStore(t *testing.T) {
	tm := startMain(t, nil)
	var c created
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "alice", "provider": "demo"}, &c); code != 201 {
		t.Fatalf("create: status %d", code)
	}
	v, err := openViewer(t.Context(), tm.URL, c.Session.ID, c.Viewer.Token)
	if err != nil {
		t.Fatalf("viewer through the gateway (derived VNC password): %v", err)
	}
	var out struct{ Session mc.Session }
	if code := tm.api.Do(t, "POST", "/api/v1/sessions/"+c.Session.ID+"/cancel", nil, &out); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	if code, _ := v.closeCode(); code != 4410 {
		t.Errorf("viewer closed with %d, want 4410", code)
	}
	testutil.WaitState(t, tm.Store, c.Session.ID, mc.StateCancelled, 10*time.Second)

	var db []byte
	files, _ := filepath.Glob(tm.Config.DatabaseURL + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		db = append(db, b...)
	}
	if len(db) == 0 {
		t.Fatalf("no database files at %s", tm.Config.DatabaseURL)
	}
	sign := tm.Vault.Vault().Keys().Derive(vault.PurposeViewerTokens).Reveal()
	sec := tm.MachineKey.Secrets(c.Session.ID)
	for what, v := range map[string]string{
		"the viewer_token_key row":    "viewer_token_key",
		"the signing key":             sign,
		"the signing key (base64)":    base64.StdEncoding.EncodeToString([]byte(sign)),
		"the signing key (base64url)": base64.RawURLEncoding.EncodeToString([]byte(sign)),
		"the machine's VNC password":  sec.VNCPassword.Reveal(),
		"the machine's agent token":   sec.AgentToken.Reveal(),
	} {
		if bytes.Contains(db, []byte(v)) {
			t.Errorf("the database holds %s", what)
		}
	}
}
