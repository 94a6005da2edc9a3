package agent

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/testutil"
)

// cliProvider runs the stand-in CLI (testdata/fakecli) as its login.
func cliProvider(tb testing.TB, args ...string) mc.Provider {
	bin := testutil.BuildBinary(tb, "github.com/master-controller/mc/agent/testdata/fakecli")
	return mc.Provider{
		Name:         "fakecli",
		LoginCommand: append([]string{bin, "-out", ".fake/auth.json"}, args...),
		Files:        []mc.CredentialFile{{Path: "~/.fake/auth.json", RequiredKeys: []string{"tokens.access_token", "account"}}},
		LoginTimeout: time.Minute,
	}
}

// start starts p's login and fails the test unless the agent accepted it.
func (a *testAPI) start(tb testing.TB, p mc.Provider) {
	tb.Helper()
	if status, body := a.do(tb, "POST", "/login/start", proto.LoginStartRequest{Provider: p}); status != http.StatusAccepted {
		tb.Fatalf("start: %d %s", status, body)
	}
}

// ended waits for the login to end and returns its status.
func (a *testAPI) ended(tb testing.TB) proto.LoginStatus {
	tb.Helper()
	_, body := a.do(tb, "GET", "/login/status?wait=30s", nil)
	return decode[proto.LoginStatus](tb, body)
}

// authorize plays the stand-in provider: the user signed in at the page
// opened, and the provider sends the browser to its redirect_uri with a
// code and the state (a GET of the CLI's callback).
func authorize(tb testing.TB, opened string) {
	tb.Helper()
	u, err := url.Parse(opened)
	if err != nil || u.Host != "provider.test" || u.Path != "/authorize" || u.Query().Get("state") == "" {
		tb.Fatalf("opened %q, want the stand-in provider's authorize URL", opened)
	}
	cb, err := url.Parse(u.Query().Get("redirect_uri"))
	if err != nil {
		tb.Fatal(err)
	}
	cb.RawQuery = url.Values{"code": {"c0de"}, "state": {u.Query().Get("state")}}.Encode()
	resp, err := http.Get(cb.String())
	if err != nil {
		tb.Fatal(err)
	}
	readAll(tb, resp)
}

func TestCLILogin(t *testing.T) {
	tests := []struct {
		name string
		args []string
		with func(*mc.Provider)
	}{
		// Codex and Claude: $BROWSER.
		{name: "BROWSER", args: []string{"-launch", "browser"}},
		// Gemini: xdg-open on PATH.
		{name: "xdg-open", args: []string{"-launch", "xdg"}},
		// A CLI that only prints: open_url picks the provider's URL, not
		// the loopback server printed first.
		{name: "printed URL", args: []string{"-launch", "none"},
			with: func(p *mc.Provider) { p.OpenURL = &mc.OpenURL{Match: `^https://provider\.test/`} }},
		// A menu first, answered by the recipe.
		{name: "menu answered", args: []string{"-menu", "Do you want to continue?"},
			with: func(p *mc.Provider) { p.Answers = []mc.Answer{{Pattern: `continue\?`, Keys: "\r"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAPI(t)
			p := cliProvider(t, tt.args...)
			if tt.with != nil {
				tt.with(&p)
			}
			a.start(t, p)
			opened := <-a.browser.urls
			_, body := a.do(t, "GET", "/login/status", nil)
			if st := decode[proto.LoginStatus](t, body); st.State != proto.StateRunning || st.Phase != mc.PhaseWaitingForUser ||
				st.URL != "https://provider.test/authorize" {
				t.Errorf("status = %+v, want running, waiting_for_user at the page without its query", st)
			}
			authorize(t, opened)
			if st := a.ended(t); st.State != proto.StateComplete || st.Phase != mc.PhaseCaptured {
				t.Fatalf("status = %+v, want complete and captured", st)
			}
			status, body := a.do(t, "GET", "/login/result", nil)
			if status != http.StatusOK {
				t.Fatalf("result: %d %s", status, body)
			}
			if content := decode[proto.LoginResult](t, body).Files["~/.fake/auth.json"]; !strings.Contains(content, `"access_token":"fake-`) {
				t.Errorf("result file = %q", content)
			}
			a.browser.mu.Lock()
			defer a.browser.mu.Unlock()
			if len(a.browser.opened) != 1 {
				t.Errorf("opened %q, want the provider's page once", a.browser.opened)
			}
		})
	}
}

// TestCLIPasteBack: a flow whose callback is not local. The provider's
// page shows the code (here: the tab reaches the callback page with code
// and state in its query), and the agent types code#state into the CLI.
func TestCLIPasteBack(t *testing.T) {
	a := newTestAPI(t)
	p := cliProvider(t, "-paste", "-launch", "none")
	p.OpenURL = &mc.OpenURL{Match: `/authorize\?`}
	p.PasteBack = &mc.PasteBack{URLPrefix: "https://provider.test/code/callback", Template: "{code}#{state}\r"}
	a.start(t, p)
	opened, err := url.Parse(<-a.browser.urls)
	if err != nil {
		t.Fatal(err)
	}
	a.browser.SetTab("https://provider.test/code/callback?code=c0de&state=" + opened.Query().Get("state"))
	if st := a.ended(t); st.State != proto.StateComplete {
		t.Fatalf("status = %+v, want complete", st)
	}
}

func TestCLIStdoutCapture(t *testing.T) {
	a := newTestAPI(t)
	p := cliProvider(t, "-print-token")
	p.Files = nil
	p.StdoutCapture = &mc.StdoutCapture{Pattern: `token: (\S+)`, File: "~/.fake/token.json"}
	a.start(t, p)
	if st := a.ended(t); st.State != proto.StateComplete {
		t.Fatalf("status = %+v, want complete", st)
	}
	_, body := a.do(t, "GET", "/login/result", nil)
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(decode[proto.LoginResult](t, body).Files["~/.fake/token.json"]), &tok); err != nil || !strings.HasPrefix(tok.Token, "sk-fake-") {
		t.Errorf("captured %+v, %v; want the printed token", tok, err)
	}
}

func TestCLISeedFilesAndEnv(t *testing.T) {
	a := newTestAPI(t)
	p := cliProvider(t, "-exit-early", "-launch", "none")
	p.SeedFiles = []mc.SeedFile{{Path: "~/.fake/settings.json", Content: `{"trusted":"{home}"}`}}
	p.Env = map[string]string{"FAKE_HOME": "~/.fakehome"}
	a.start(t, p)
	a.ended(t)
	b, err := os.ReadFile(filepath.Join(a.home, ".fake/settings.json"))
	if want := `{"trusted":"` + a.home + `"}`; err != nil || string(b) != want {
		t.Errorf("seed file = %q, %v; want %q", b, err, want)
	}
	if st, err := os.Stat(filepath.Join(a.home, ".fakehome")); err != nil || !st.IsDir() {
		t.Errorf("FAKE_HOME directory: %v, want it created", err)
	}
}

func TestCLILoginFailures(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		with    func(*mc.Provider)
		want    mc.Reason
		wantOut string // in the last lines
	}{
		{name: "command exits 1", args: []string{"-fail"}, want: proto.ReasonCommandFailed,
			wantOut: "error: the provider said no (request id [redacted])"},
		{name: "command exits without files", args: []string{"-exit-early", "-launch", "none"}, want: proto.ReasonCredentialsMissing},
		{name: "an answer that never matches", args: []string{"-menu", "Pick a theme:"}, want: proto.ReasonLoginTimeout,
			with: func(p *mc.Provider) {
				p.Answers = []mc.Answer{{Pattern: `Choose a colour`, Keys: "\r"}}
				p.LoginTimeout = 2 * time.Second
			}, wantOut: "Pick a theme:"},
		{name: "command missing", with: func(p *mc.Provider) { p.LoginCommand = []string{"/nonexistent/cli"} }, want: proto.ReasonCommandFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAPI(t)
			p := cliProvider(t, tt.args...)
			if tt.with != nil {
				tt.with(&p)
			}
			a.start(t, p)
			st := a.ended(t)
			if st.State != proto.StateFailed || st.Reason != tt.want {
				t.Fatalf("status = %+v, want failed %s", st, tt.want)
			}
			if tt.wantOut != "" && !strings.Contains(strings.Join(st.Lines, "\n"), tt.wantOut) {
				t.Errorf("lines %q, want %q in them", st.Lines, tt.wantOut)
			}
		})
	}
}

// TestCLIBlankedFile: a credential file that is present but blanked ("")
// is not complete.
func TestCLIBlankedFile(t *testing.T) {
	a := newTestAPI(t)
	a.start(t, cliProvider(t, "-blank"))
	authorize(t, <-a.browser.urls)
	if st := a.ended(t); st.State != proto.StateFailed || st.Reason != proto.ReasonCredentialsMissing {
		t.Fatalf("status = %+v, want failed credentials_missing", st)
	}
}
