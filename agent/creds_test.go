package agent

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
)

func TestHasKeys(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		required []string
		ok       bool
	}{
		{"no keys needed", `{}`, nil, true},
		{"top level", `{"access_token":"x","user":"u"}`, []string{"access_token", "user"}, true},
		{"missing", `{"access_token":"x"}`, []string{"access_token", "user"}, false},
		{"null counts as missing", `{"access_token":null}`, []string{"access_token"}, false},
		{"dotted", `{"claudeAiOauth":{"accessToken":"x","expiresAt":1}}`, []string{"claudeAiOauth.accessToken"}, true},
		{"dotted missing leaf", `{"claudeAiOauth":{}}`, []string{"claudeAiOauth.accessToken"}, false},
		{"dotted through a string", `{"claudeAiOauth":"x"}`, []string{"claudeAiOauth.accessToken"}, false},
		{"blanked string is missing", `{"k":""}`, []string{"k"}, false},
		{"empty list is missing", `{"k":[]}`, []string{"k"}, false},
		{"zero is present", `{"k":0}`, []string{"k"}, true},
		{"claude, complete", `{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1,"scopes":["user:inference"]}}`,
			[]string{"claudeAiOauth.accessToken", "claudeAiOauth.refreshToken", "claudeAiOauth.expiresAt", "claudeAiOauth.scopes"}, true},
		{"claude, blanked after a failed refresh", `{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":1,"scopes":[]}}`,
			[]string{"claudeAiOauth.accessToken", "claudeAiOauth.refreshToken", "claudeAiOauth.expiresAt", "claudeAiOauth.scopes"}, false},
		{"claude, logged out (no expiresAt)", `{"claudeAiOauth":{"accessToken":"a","refreshToken":"r"}}`,
			[]string{"claudeAiOauth.accessToken", "claudeAiOauth.refreshToken", "claudeAiOauth.expiresAt", "claudeAiOauth.scopes"}, false},
		{"not json", `{"access_token":`, nil, false},
		{"not an object", `["access_token"]`, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := hasKeys([]byte(tt.doc), tt.required)
			if got := err == nil; got != tt.ok {
				t.Fatalf("hasKeys(%s, %q) = %v, want ok %v", tt.doc, tt.required, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errIncomplete) {
				t.Errorf("error %v does not wrap errIncomplete", err)
			}
		})
	}
}

func TestCheckCredentialFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	if _, err := checkCredentialFile(path, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte(`{"a":{"b":1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := checkCredentialFile(path, []string{"a.b"})
	if err != nil || string(got) != `{"a":{"b":1}}` {
		t.Errorf("checkCredentialFile = %q, %v", got, err)
	}
}

func TestResolveHomePath(t *testing.T) {
	home := "/home/m"
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"~/.claude/.credentials.json", "/home/m/.claude/.credentials.json", true},
		{".codex/auth.json", "/home/m/.codex/auth.json", true},
		{"~/a/../b.json", "/home/m/b.json", true},
		{"/etc/passwd", "", false},
		{"~/../etc/passwd", "", false},
		{"../x", "", false},
		{"~", "", false},
		{"~root/x", "", false},
		{"", "", false},
		{"~/", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := resolveHomePath(home, tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("resolveHomePath(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
			}
			if err != nil && mc.ErrorCode(err) != mc.EINVALID {
				t.Errorf("code = %s, want %s", mc.ErrorCode(err), mc.EINVALID)
			}
		})
	}
}

func TestWaitForFilesFollowsNewDirectories(t *testing.T) {
	home := t.TempDir()
	files := []watchedFile{
		{Name: "~/.a/b/c.json", Path: filepath.Join(home, ".a/b/c.json"), RequiredKeys: []string{"k"}},
		{Name: "~/top.json", Path: filepath.Join(home, "top.json")},
	}
	ready := make(chan struct{})
	type res struct {
		got map[string]string
		err error
	}
	done := make(chan res, 1)
	go func() {
		close(ready)
		got, err := waitForFiles(t.Context(), home, files)
		done <- res{got, err}
	}()
	<-ready
	write := func(rel, content string) {
		p := filepath.Join(home, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".a/b/c.json", `{"other":1}`) // incomplete: no k
	write("top.json", `{}`)
	write(".a/b/c.json", `{"k":"v"}`)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got, want := r.got["~/.a/b/c.json"], `{"k":"v"}`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := len(r.got), 2; got != want {
		t.Errorf("files = %d, want %d", got, want)
	}
}

// TestStaleFileCountsOnlyOnceRewritten: a credential file that exists before
// the login starts (an old login's, or one baked into an image) does not
// complete the login; a rewrite does.
func TestStaleFileCountsOnlyOnceRewritten(t *testing.T) {
	a := newTestAPI(t)
	if err := writeDemoCredential(a.home); err != nil {
		t.Fatal(err)
	}
	if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
		t.Fatalf("start: %d %s", status, body)
	}
	<-a.browser.urls
	// The watcher has checked the stale file at least once when a status
	// wait of one safety interval ends still running.
	_, body := a.do(t, "GET", "/login/status?wait="+(2*safetyInterval).String(), nil)
	if st := decode[proto.LoginStatus](t, body); st.State != proto.StateRunning {
		t.Fatalf("status with a stale file = %+v, want running", st)
	}
	if err := writeDemoCredential(a.home); err != nil {
		t.Fatal(err)
	}
	_, body = a.do(t, "GET", "/login/status?wait=30s", nil)
	if st := decode[proto.LoginStatus](t, body); st.State != proto.StateComplete {
		t.Fatalf("status after the rewrite = %+v, want complete", st)
	}
}
