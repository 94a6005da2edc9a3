package e2e_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
)

// demoCredential is the file the demo provider's sign-in writes.
type demoCredential struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	User        string `json:"user"`
}

// TestSignIn is issue 5's end-to-end test, on SQLite and on PostgreSQL: a
// demo session, its viewer page in headless Chromium, a click on "Sign in"
// inside the remote browser through noVNC's pointer events (the test never
// calls the agent), and the session completes; the viewer shows the
// signed-in state (close 1000); the API returns the demo credential; the
// machine, its namespace and its files are gone; the audit log holds the
// read. Then the credential's secret value is searched for where it must
// not be: the database (SQLite file with its -wal and -shm, or a pg_dump)
// and every line the controller logged or printed.
func TestSignIn(t *testing.T) {
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			env := controllerEnv(t, defaultMode())
			var pgURL string
			if store == "postgres" {
				pgURL = pgtest.Start(t)
				env["MC_DATABASE_URL"] = pgURL
			}
			c := startController(t, env)
			if got := c.Config.Postgres(); got != (store == "postgres") {
				t.Fatalf("controller uses postgres = %v", got)
			}
			user := "signin-" + store
			cr := c.api.createSession(t, user, "demo")
			id := cr.Session.ID

			b := browsertest.New(t)
			b.Timeout = 60 * time.Second
			b.Open(cr.Viewer.URL)
			b.WaitState("connected")
			b.Timeout = 30 * time.Second
			b.WaitCanvas("the demo sign-in page", showsDemoPage)
			before, err := c.Store.Session(t.Context(), id)
			if err != nil || before.State != mc.StateReady {
				t.Fatalf("before the click: %+v, %v; want ready", before, err)
			}
			ms := readMachine(t, c.dataDir, before.Machine.ID)

			// A click at the remote screen's centre, where the button is,
			// sent by noVNC as RFB pointer events.
			w, h := b.CanvasSize()
			b.ClickCanvas(w/2, h/2)
			s := testutil.WaitState(t, c.Store, id, mc.StateCompleted, 30*time.Second)
			if s.Reason != mc.ReasonSignedIn {
				t.Errorf("completed with reason %q, want signed_in", s.Reason)
			}

			b.WaitState("signed-in")
			if v := readViewer(b); v.LastCloseCode == nil || *v.LastCloseCode != 1000 {
				t.Errorf("viewer after sign-in: %+v, want close code 1000", v)
			}
			if got := b.Text("#status"); !strings.Contains(got, "Signed in") {
				t.Errorf("status line %q, want it to say Signed in", got)
			}

			// The credential, opened for the backend.
			var cred mc.Credential
			path := "/api/v1/credentials/" + url.PathEscape(user) + "/demo"
			if code := c.api.Do(t, "GET", path, nil, &cred); code != http.StatusOK {
				t.Fatalf("GET %s: status %d", path, code)
			}
			if cred.UserID != user || cred.Provider != "demo" || cred.SessionID != id {
				t.Errorf("credential of %s/%s from session %s, want %s/demo from %s", cred.UserID, cred.Provider, cred.SessionID, user, id)
			}
			var file string
			for name, content := range cred.Files {
				if strings.HasSuffix(name, ".demo/credentials.json") {
					file = content
				}
			}
			var dc demoCredential
			if err := json.Unmarshal([]byte(file), &dc); err != nil {
				t.Fatalf("credential files %v: no .demo/credentials.json with JSON: %v", keys(cred.Files), err)
			}
			secret, ok := strings.CutPrefix(dc.AccessToken, "demo-")
			if !ok || len(secret) < 16 || dc.TokenType != "Bearer" || dc.User != "demo" {
				t.Fatalf("demo credential = %+v, want access_token demo-…, token_type Bearer, user demo", dc)
			}

			// The machine, its namespace and its files are gone (after the
			// destroy grace).
			var left []string
			_ = testutil.Poll(t.Context(), 10*time.Second, func() error {
				if left = leftovers(t, c.Store, ms); len(left) > 0 {
					return errLeft
				}
				return nil
			})
			if len(left) > 0 {
				t.Errorf("after completion the machine still has: %s", strings.Join(left, "; "))
			}
			if _, err := os.Stat(filepath.Join(ms.Home, ".demo", "credentials.json")); err == nil {
				t.Error("the credential file is still in the machine's home")
			}

			// The audit log holds the read.
			var audit struct {
				Entries []mc.AuditEntry `json:"entries"`
			}
			if code := c.api.Do(t, "GET", "/api/v1/audit?user_id="+url.QueryEscape(user), nil, &audit); code != http.StatusOK {
				t.Fatalf("GET /api/v1/audit: status %d", code)
			}
			found := false
			for _, e := range audit.Entries {
				if e.Action == "read" && e.UserID == user && e.Provider == "demo" && e.Outcome == "ok" && e.Actor != "" {
					found = true
				}
			}
			if !found {
				t.Errorf("audit entries %+v hold no read of %s/demo", audit.Entries, user)
			}

			// No plaintext where it must not be. The needle is the token's
			// random part, so that an escaped or re-prefixed copy is found
			// too; the sealed record proves each search covers the place
			// where the credential lives.
			sealed, err := c.Store.Credential(t.Context(), user, "demo")
			if err != nil || len(sealed.Ciphertext) == 0 {
				t.Fatalf("sealed record: %+v, %v", sealed, err)
			}
			needle := []byte(secret)
			if bytes.Contains(sealed.Ciphertext, needle) {
				t.Error("the sealed record's ciphertext holds the plaintext token")
			}
			switch store {
			case "sqlite":
				db := sqliteBytes(t, c.Config.DatabaseURL)
				if !bytes.Contains(db, sealed.Ciphertext) {
					t.Error("the SQLite files do not hold the sealed record: the search would not find the credential there")
				}
				if bytes.Contains(db, needle) {
					t.Error("the SQLite database files hold the credential's plaintext token")
				}
			case "postgres":
				dump := pgDump(t, pgURL)
				if !bytes.Contains(dump, []byte(hex.EncodeToString(sealed.Ciphertext))) {
					t.Error("the pg_dump does not hold the sealed record: the search would not find the credential there")
				}
				if bytes.Contains(dump, needle) {
					t.Error("the pg_dump holds the credential's plaintext token")
				}
			}
			logs := c.logs.String()
			if !strings.Contains(logs, id) || !strings.Contains(logs, "credential sealed") {
				t.Error("the controller's log does not hold the session's lines: the search would prove nothing")
			}
			for _, where := range []struct{ name, text string }{{"log", logs}, {"output", c.out.String()}} {
				if strings.Contains(where.text, secret) {
					t.Errorf("the controller's %s holds the credential's plaintext token", where.name)
				}
			}
		})
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// sqliteBytes returns the bytes of a SQLite database and its -wal and -shm
// files (those that exist).
func sqliteBytes(tb testing.TB, path string) []byte {
	tb.Helper()
	var all []byte
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil && suffix == "" {
			tb.Fatalf("read the SQLite database: %v", err)
		}
		all = append(all, b...)
	}
	return all
}

// pgDump dumps a PostgreSQL database (schema and data) with pg_dump (over
// TCP with the throwaway cluster's trust authentication, so any local user
// may run it).
func pgDump(tb testing.TB, dbURL string) []byte {
	tb.Helper()
	bin := "pg_dump"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "/usr/lib/postgresql/15/bin/pg_dump"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--no-owner", "--dbname", dbURL)
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("pg_dump: %v: %s", err, stderr.String())
	}
	if !bytes.Contains(out, []byte("PostgreSQL database dump")) {
		tb.Fatalf("pg_dump wrote no dump: %.200q", out)
	}
	return out
}
