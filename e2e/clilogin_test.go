package e2e_test

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/local"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/testutil"
)

// The real provider CLIs (Claude Code, Codex, Gemini CLI at the versions
// pinned in clis/package-lock.json) run in real machines. They are
// installed by scripts/deps.sh; MC_CLI_DIR (default local.DefaultCLIDir)
// says where.

// cliDir returns the directory of the pinned CLIs, or skips the test (fails
// under CI=true) when a CLI is missing.
func cliDir(tb testing.TB, names ...string) string {
	tb.Helper()
	dir := os.Getenv("MC_CLI_DIR")
	if dir == "" {
		dir = local.DefaultCLIDir
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			testutil.SkipOrFail(tb, "provider CLI %s is missing from %s: run scripts/deps.sh", n, dir)
		}
	}
	return dir
}

// waitSession waits (through the store's Watch) until ok holds.
func waitSession(tb testing.TB, c *controller, id string, timeout time.Duration, what string, ok func(*mc.Session) bool) *mc.Session {
	tb.Helper()
	return testutil.WaitSession(tb, c.Store, id, timeout, what, ok)
}

func loginOf(s *mc.Session) any {
	if s == nil || s.Login == nil {
		return nil
	}
	return *s.Login
}

// TestCLIOfflineSignInPage: what a user sees before signing in, with no
// network at all: each real CLI starts in its machine, its "open a browser"
// reaches the machine's Chromium, and the session is capturing with
// login.url on the provider's real host (never a query). The time from
// ready is logged, not asserted (a loaded host starts Node slowly: Gemini's
// --version alone took 20 s at a load of 33 on two cores); unloaded, Codex
// and Claude take 1 to 4 s.
func TestCLIOfflineSignInPage(t *testing.T) {
	tests := []struct {
		provider, cli string
		hosts         []string
	}{
		{"codex", "codex", []string{"auth.openai.com"}},
		{"claude_code", "claude", []string{"claude.ai", "claude.com"}},
		{"gemini_cli", "gemini", []string{"accounts.google.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			env := controllerEnv(t, defaultMode())
			env["MC_CLI_DIR"] = cliDir(t, tt.cli)
			c := startController(t, env)
			cr := c.api.createSession(t, "offline-"+tt.provider, tt.provider)
			ready := waitSession(t, c, cr.Session.ID, 60*time.Second, "ready", func(s *mc.Session) bool {
				return !s.ReadyAt.IsZero() || s.State.Final()
			})
			if ready.State.Final() {
				t.Fatalf("session ended before ready: %s/%s", ready.State, ready.Reason)
			}
			s := waitSession(t, c, cr.Session.ID, 90*time.Second, "capturing with a sign-in page", func(s *mc.Session) bool {
				return s.State == mc.StateCapturing && s.Login != nil && s.Login.URL != "" || s.State.Final()
			})
			u, err := url.Parse(s.Login.URL)
			if err != nil || u.Scheme != "https" || !contains(tt.hosts, u.Host) || u.RawQuery != "" {
				t.Errorf("login %+v: want https on %v without a query", *s.Login, tt.hosts)
			}
			if s.Login.Phase != mc.PhaseWaitingForUser {
				t.Errorf("login phase %s, want waiting_for_user", s.Login.Phase)
			}
			t.Logf("%s: capturing at %s %.1f s after ready", tt.provider, s.Login.URL, s.Login.UpdatedAt.Sub(ready.ReadyAt).Seconds())
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCLILogin is each real CLI's login end to end, offline: a session
// through the API, its viewer page in headless Chromium through the
// gateway, and a click on the stand-in provider's "Authorize" button inside
// the remote browser with noVNC's pointer events. The provider sends the
// machine's browser to the CLI's own callback on localhost, the CLI
// exchanges the code (PKCE and redirect_uri checked) and writes its real
// credential file, the session completes, and the API returns the file.
func TestCLILogin(t *testing.T) {
	tests := []struct {
		provider, cli, name string
		env                 func(ca string) string // the provider's env, as JSON
		page                string                 // login.url before the click
		// redirect is the redirect_uri the CLI redeems its code with: a
		// localhost callback, or the provider's page for paste-back.
		redirect string
		// recipe is more of the provider's override, as JSON fields.
		recipe string
		file   string
		check  func(content string) error
	}{
		{provider: "codex", cli: "codex",
			env:  func(ca string) string { return `{"CODEX_HOME": "~/.codex", "SSL_CERT_FILE": "` + ca + `"}` },
			page: "https://auth.openai.com/oauth/authorize", file: "~/.codex/auth.json", redirect: "http://127.0.0.1:1455/auth/callback",
			check: func(content string) error {
				var auth struct {
					Tokens struct {
						IDToken      string `json:"id_token"`
						AccessToken  string `json:"access_token"`
						RefreshToken string `json:"refresh_token"`
					} `json:"tokens"`
				}
				if err := json.Unmarshal([]byte(content), &auth); err != nil || !strings.HasPrefix(auth.Tokens.AccessToken, "at-") ||
					!strings.HasPrefix(auth.Tokens.RefreshToken, "rt-") || auth.Tokens.IDToken == "" {
					return fmt.Errorf("tokens %+v (%v), want the stand-in's", auth.Tokens, err)
				}
				return nil
			}},
		{provider: "claude_code", cli: "claude",
			env: func(ca string) string {
				return `{"CLAUDE_CONFIG_DIR": "~/.claude", "NODE_EXTRA_CA_CERTS": "` + ca + `"}`
			},
			page: "https://claude.com/cai/oauth/authorize", file: "~/.claude/.credentials.json", redirect: "http://localhost:",
			check: checkClaude},
		// Paste-back: Claude's full manual link, whose provider page shows
		// the code; the agent types code#state into Claude's prompt.
		{provider: "claude_code", cli: "claude", name: "paste-back",
			env: func(ca string) string {
				return `{"CLAUDE_CONFIG_DIR": "~/.claude", "NODE_EXTRA_CA_CERTS": "` + ca + `", "CLAUDE_CODE_FULL_SIGN_IN_LINK": "1"}`
			},
			recipe: `"open_url": {"match": "^https://claude\\.com/cai/oauth/authorize\\?code=true", "instead_of_browser": true}`,
			page:   "https://claude.com/cai/oauth/authorize", file: "~/.claude/.credentials.json",
			redirect: "https://platform.claude.com/oauth/code/callback", check: checkClaude},
		// Paste-back: Gemini without a browser to launch.
		{provider: "gemini_cli", cli: "gemini", name: "paste-back",
			env:  func(ca string) string { return `{"NODE_EXTRA_CA_CERTS": "` + ca + `", "NO_BROWSER": "true"}` },
			page: "https://accounts.google.com/o/oauth2/v2/auth", file: "~/.gemini/oauth_creds.json",
			redirect: "https://codeassist.google.com/authcode", check: checkGemini},
		{provider: "gemini_cli", cli: "gemini",
			env:  func(ca string) string { return `{"NODE_EXTRA_CA_CERTS": "` + ca + `"}` },
			page: "https://accounts.google.com/o/oauth2/v2/auth", file: "~/.gemini/oauth_creds.json",
			redirect: "http://127.0.0.1:", check: checkGemini},
	}
	for _, tt := range tests {
		name := tt.provider
		if tt.name != "" {
			name += "/" + tt.name
		}
		t.Run(name, func(t *testing.T) {
			dir := cliDir(t, tt.cli)
			env := controllerEnv(t, "netns")
			tmp := shortTempDir(t)
			si := newStandIn(t, tmp)
			providers := filepath.Join(tmp, "providers.json")
			recipe := ""
			if tt.recipe != "" {
				recipe = ", " + tt.recipe
			}
			writeFile(t, providers, `{"providers": [{"name": "`+tt.provider+`", "env": `+tt.env(si.caFile)+recipe+`}]}`)
			env["MC_CLI_DIR"] = dir
			env["MC_PROVIDERS_FILE"] = providers
			env["MC_TEST_MACHINE_HOSTS"] = si.hostsFile(tmp)
			env["MC_TEST_TRUST_SPKI"] = si.spki
			// The machine's agent uid reads the CA: the temporary
			// directory (0700 when made) must let it through.
			if err := os.Chmod(filepath.Dir(si.caFile), 0o755); err != nil {
				t.Fatal(err)
			}
			env["MC_TEST_MACHINE_BINDS"] = filepath.Dir(si.caFile)
			c := startController(t, env)
			user := "cli-" + tt.cli + strings.ReplaceAll(tt.name, "-", "")
			cr := c.api.createSession(t, user, tt.provider)
			id := cr.Session.ID
			withMachine := waitSession(t, c, id, 60*time.Second, "a machine", func(s *mc.Session) bool { return s.Machine.ID != "" || s.State.Final() })
			si.serveIn(fmt.Sprintf("/proc/%d/ns/net", readMachine(t, c.dataDir, withMachine.Machine.ID).PID))

			b := browsertest.New(t)
			b.Timeout = 60 * time.Second
			b.Open(cr.Viewer.URL)
			b.WaitState("connected")
			b.Timeout = 90 * time.Second
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("stand-in requests: %q", si.requests())
				}
			})
			b.WaitCanvas("the stand-in's Authorize button", showsButton)
			// The session says what the page shows, one store write after
			// the agent opened it: the canvas may be first.
			waitSession(t, c, id, 10*time.Second, "capturing at "+tt.page, func(s *mc.Session) bool {
				return s.State.Final() || s.State == mc.StateCapturing && s.Login != nil && s.Login.URL == tt.page
			})
			s := c.api.session(t, id)
			if s.Login == nil || s.Login.URL != tt.page || s.State != mc.StateCapturing {
				t.Errorf("before the click: %s, login %+v; want capturing at %s", s.State, loginOf(&s), tt.page)
			}
			w, h := b.CanvasSize()
			b.ClickCanvas(w/2, h/2)
			done := waitSession(t, c, id, 90*time.Second, "completed", func(s *mc.Session) bool { return s.State.Final() })
			if done.State != mc.StateCompleted {
				t.Fatalf("session ended %s/%s, want completed; stand-in saw %q", done.State, done.Reason, si.requests())
			}
			var cred mc.Credential
			if code := c.api.Do(t, "GET", "/api/v1/credentials/"+user+"/"+tt.provider, nil, &cred); code != 200 {
				t.Fatalf("GET credential: %d", code)
			}
			if err := tt.check(cred.Files[tt.file]); err != nil {
				t.Errorf("%s: %v", tt.file, err)
			}
			if r := si.redeemed(); len(r) != 1 || !strings.HasPrefix(r[0], tt.redirect) {
				t.Errorf("codes redeemed with redirect_uri %q, want one with %s…", r, tt.redirect)
			}
			t.Logf("stand-in requests: %q", si.requests())
		})
	}
}

func checkClaude(content string) error {
	var f struct {
		OAuth struct {
			AccessToken  string   `json:"accessToken"`
			RefreshToken string   `json:"refreshToken"`
			ExpiresAt    int64    `json:"expiresAt"`
			Scopes       []string `json:"scopes"`
		} `json:"claudeAiOauth"`
	}
	if err := json.Unmarshal([]byte(content), &f); err != nil || !strings.HasPrefix(f.OAuth.AccessToken, "sk-ant-oat01-e2e") ||
		f.OAuth.ExpiresAt == 0 || len(f.OAuth.Scopes) == 0 {
		return fmt.Errorf("claudeAiOauth %+v (%v), want the stand-in's", f.OAuth, err)
	}
	return nil
}

func checkGemini(content string) error {
	var f struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiryDate   int64  `json:"expiry_date"`
	}
	if err := json.Unmarshal([]byte(content), &f); err != nil || !strings.HasPrefix(f.AccessToken, "ya29.e2e") || f.ExpiryDate == 0 {
		return fmt.Errorf("oauth_creds %+v (%v), want the stand-in's", f, err)
	}
	return nil
}

// showsButton reports whether the remote screen shows the stand-in's
// Authorize button (it fills the page).
func showsButton(img image.Image) bool {
	bnd := img.Bounds()
	want := color.RGBA{0x1b, 0x8a, 0x3a, 0xff}
	return near(rgba(img, bnd.Dx()/2, bnd.Dy()/4), want, 24) && near(rgba(img, bnd.Dx()/4, bnd.Dy()*3/4), want, 24)
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}
