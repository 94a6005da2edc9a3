package provider

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
)

func TestBuiltins(t *testing.T) {
	r := New()
	if got, want := r.Names(), []string{"claude_code", "codex", "demo", "gemini_cli"}; !slices.Equal(got, want) {
		t.Fatalf("got built-ins %v, want %v", got, want)
	}
	for _, p := range r.All() {
		if err := Validate(p); err != nil {
			t.Errorf("built-in %s does not validate: %v", p.Name, err)
		}
	}
	tests := []struct {
		name     string
		start    string
		command  string
		path     string
		keys     []string
		timeout  time.Duration
		display  string
		hasStart bool
	}{
		{name: "demo", display: "Demo", start: "local:/demo/signin", path: "~/.demo/credentials.json", keys: []string{"access_token"}, timeout: 10 * time.Minute},
		{name: "claude_code", display: "Claude Code", command: "claude auth login", path: "~/.claude/.credentials.json", keys: []string{"claudeAiOauth.accessToken", "claudeAiOauth.refreshToken", "claudeAiOauth.expiresAt", "claudeAiOauth.scopes"}, timeout: 15 * time.Minute},
		{name: "codex", display: "Codex", command: "codex login", path: "~/.codex/auth.json", keys: []string{"tokens.id_token", "tokens.access_token", "tokens.refresh_token"}, timeout: 15 * time.Minute},
		{name: "gemini_cli", display: "Gemini CLI", command: "gemini", path: "~/.gemini/oauth_creds.json", keys: []string{"access_token", "refresh_token", "expiry_date"}, timeout: 15 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := r.Get(tt.name)
			if !ok {
				t.Fatalf("Get(%q) found nothing", tt.name)
			}
			if p.DisplayName != tt.display || p.StartURL != tt.start || strings.Join(p.LoginCommand, " ") != tt.command || p.LoginTimeout != tt.timeout {
				t.Errorf("got %+v, want display %q start %q command %q timeout %v", p, tt.display, tt.start, tt.command, tt.timeout)
			}
			if len(p.Files) != 1 || p.Files[0].Path != tt.path || !slices.Equal(p.Files[0].RequiredKeys, tt.keys) {
				t.Errorf("got files %+v, want %s with %v", p.Files, tt.path, tt.keys)
			}
		})
	}
	if _, ok := r.Get("nope"); ok {
		t.Errorf("Get(nope) found a provider")
	}
}

func TestGetReturnsCopies(t *testing.T) {
	r := New()
	p, _ := r.Get("codex")
	p.LoginCommand[0] = "evil"
	p.Files[0].RequiredKeys[0] = "x"
	all := r.All()
	all[0].Files[0].Path = "/etc/passwd"
	p.Env["CODEX_HOME"] = "/tmp"
	p.SeedFiles[0].Content = "x"
	p.OpenURL.Match = "."
	again, _ := r.Get("codex")
	if again.Env["CODEX_HOME"] != "~/.codex" || again.SeedFiles[0].Content == "x" || again.OpenURL.Match == "." {
		t.Errorf("changing a returned provider's recipe changed the registry: %+v", again)
	}
	if again.LoginCommand[0] != "codex" || again.Files[0].RequiredKeys[0] != "tokens.id_token" {
		t.Errorf("changing a returned provider changed the registry: %+v", again)
	}
	if first, _ := r.Get(all[0].Name); first.Files[0].Path == "/etc/passwd" {
		t.Errorf("changing All's result changed the registry")
	}
}

func validProvider() mc.Provider {
	return mc.Provider{
		Name:         "acme",
		DisplayName:  "Acme",
		StartURL:     "https://login.example.com/start",
		Files:        []mc.CredentialFile{{Path: "~/.acme/token.json", RequiredKeys: []string{"token"}}},
		LoginTimeout: 10 * time.Minute,
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *mc.Provider)
		want   []string // one substring per expected problem; nil: valid
	}{
		{name: "valid", change: func(*mc.Provider) {}},
		{name: "command only", change: func(p *mc.Provider) { p.StartURL = ""; p.LoginCommand = []string{"acme", "login"} }},
		{name: "local start url", change: func(p *mc.Provider) { p.StartURL = "local:/acme" }},
		{name: "relative path without ~/", change: func(p *mc.Provider) { p.Files[0].Path = ".acme/token.json" }},
		{name: "bounds are inclusive", change: func(p *mc.Provider) { p.LoginTimeout = MaxLoginTimeout }},
		{name: "name too short", change: func(p *mc.Provider) { p.Name = "a" }, want: []string{"name must match"}},
		{name: "name upper case", change: func(p *mc.Provider) { p.Name = "Acme" }, want: []string{"name must match"}},
		{name: "name starts with digit", change: func(p *mc.Provider) { p.Name = "1acme" }, want: []string{"name must match"}},
		{name: "name with dash", change: func(p *mc.Provider) { p.Name = "ac-me" }, want: []string{"name must match"}},
		{name: "name too long", change: func(p *mc.Provider) { p.Name = "a" + strings.Repeat("b", 32) }, want: []string{"name must match"}},
		{name: "no display name", change: func(p *mc.Provider) { p.DisplayName = " " }, want: []string{"display_name is empty"}},
		{name: "display name with newline", change: func(p *mc.Provider) { p.DisplayName = "a\nb" }, want: []string{"control character"}},
		{name: "no way to start", change: func(p *mc.Provider) { p.StartURL = "" }, want: []string{"needs a start_url or a login_command"}},
		{name: "ftp start url", change: func(p *mc.Provider) { p.StartURL = "ftp://x/y" }, want: []string{"must be an http(s) URL"}},
		{name: "url without host", change: func(p *mc.Provider) { p.StartURL = "https:///x" }, want: []string{"must be an http(s) URL"}},
		{name: "url with password", change: func(p *mc.Provider) { p.StartURL = "https://u:p@x/y" }, want: []string{"must not contain a user"}},
		{name: "bad local url", change: func(p *mc.Provider) { p.StartURL = "local:demo" }, want: []string{`must be "local:/path"`}},
		{name: "empty program", change: func(p *mc.Provider) { p.LoginCommand = []string{"", "x"} }, want: []string{"login_command[0]"}},
		{name: "no files", change: func(p *mc.Provider) { p.Files = nil }, want: []string{"at least one file"}},
		{name: "absolute path", change: func(p *mc.Provider) { p.Files[0].Path = "/etc/passwd" }, want: []string{"not absolute"}},
		{name: "absolute after ~/", change: func(p *mc.Provider) { p.Files[0].Path = "~//etc/passwd" }, want: []string{"not absolute"}},
		{name: "other user's home", change: func(p *mc.Provider) { p.Files[0].Path = "~root/.ssh/id_rsa" }, want: []string{"machine user's home"}},
		{name: "dot dot", change: func(p *mc.Provider) { p.Files[0].Path = "~/../etc/passwd" }, want: []string{`".."`}},
		{name: "dot dot inside", change: func(p *mc.Provider) { p.Files[0].Path = "~/.acme/../../x" }, want: []string{`".."`}},
		{name: "home itself", change: func(p *mc.Provider) { p.Files[0].Path = "~/" }, want: []string{"home directory, not a file"}},
		{name: "unclean path", change: func(p *mc.Provider) { p.Files[0].Path = "~/.acme//token.json" }, want: []string{"not a clean path"}},
		{name: "empty path", change: func(p *mc.Provider) { p.Files[0].Path = "" }, want: []string{"is empty"}},
		{name: "same file twice", change: func(p *mc.Provider) {
			p.Files = append(p.Files, mc.CredentialFile{Path: ".acme/token.json"})
		}, want: []string{"listed twice"}},
		{name: "bad required key", change: func(p *mc.Provider) { p.Files[0].RequiredKeys = []string{"a..b", ""} },
			want: []string{`required_keys[0] "a..b"`, `required_keys[1] ""`}},
		{name: "timeout zero", change: func(p *mc.Provider) { p.LoginTimeout = 0 }, want: []string{"login_timeout 0s is outside"}},
		{name: "timeout too long", change: func(p *mc.Provider) { p.LoginTimeout = 3 * time.Hour }, want: []string{"login_timeout 3h0m0s is outside"}},
		{name: "several problems, one each", change: func(p *mc.Provider) {
			p.Name, p.StartURL, p.Files, p.LoginTimeout = "X", "", nil, time.Second
		}, want: []string{"name must match", "needs a start_url", "at least one file", "login_timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validProvider()
			tt.change(&p)
			err := Validate(p)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			checkProblems(t, err, tt.want)
		})
	}
}

// checkProblems checks that err is an invalid_provider error with exactly
// one problem per wanted substring, in order.
func checkProblems(tb testing.TB, err error, want []string) {
	tb.Helper()
	if got := mc.ErrorCode(err); got != mc.EINVALID {
		tb.Fatalf("got %v, want code %q", err, mc.EINVALID)
	}
	if got := mc.ErrorReason(err); got != ReasonBadProvider {
		tb.Errorf("got reason %q, want %q", got, ReasonBadProvider)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		tb.Fatalf("got %T, want a *ConfigError cause", err)
	}
	if len(ce.Problems) != len(want) {
		tb.Fatalf("got %d problems %q, want %d like %q", len(ce.Problems), ce.Problems, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(ce.Problems[i], w) {
			tb.Errorf("got problem %q, want it to contain %q", ce.Problems[i], w)
		}
	}
	if msg := mc.ErrorMessage(err); !strings.Contains(msg, ce.Problems[0]) {
		tb.Errorf("got client message %q, want it to list the problems", msg)
	}
}

func writeConfig(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "providers.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestLoadOverrideAndExtend(t *testing.T) {
	path := writeConfig(t, `{
	  "providers": [
	    {"name": "claude_code", "login_command": ["claude", "/login"]},
	    {"name": "codex", "files": [{"path": "~/.codex/auth.json", "required_keys": ["OPENAI_API_KEY"]}], "login_timeout": "20m"},
	    {"name": "demo", "start_url": "", "login_command": ["demo-cli", "login"]},
	    {"name": "gemini_cli", "disabled": true},
	    {"name": "acme", "login_command": ["acme", "login"],
	     "files": [{"path": "~/.acme/token.json", "required_keys": ["token"]}, {"path": ".acme/refresh"}]},
	    {"name": "intranet", "display_name": "Intranet SSO", "start_url": "https://sso.example.com/login", "login_timeout": "5m",
	     "files": [{"path": "~/.sso/cookie.json"}]}
	  ]
	}`)
	r, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := r.Names(), []string{"acme", "claude_code", "codex", "demo", "intranet"}; !slices.Equal(got, want) {
		t.Errorf("got names %v, want %v", got, want)
	}
	builtin := map[string]mc.Provider{}
	for _, p := range Builtins() {
		builtin[p.Name] = p
	}

	claude, _ := r.Get("claude_code")
	wantClaude := builtin["claude_code"]
	wantClaude.LoginCommand = []string{"claude", "/login"}
	if !reflect.DeepEqual(claude, wantClaude) {
		t.Errorf("got claude_code %+v, want %+v (only the command overridden)", claude, wantClaude)
	}

	codex, _ := r.Get("codex")
	if codex.LoginTimeout != 20*time.Minute || !slices.Equal(codex.Files[0].RequiredKeys, []string{"OPENAI_API_KEY"}) ||
		!slices.Equal(codex.LoginCommand, []string{"codex", "login"}) {
		t.Errorf("got codex %+v, want files and timeout overridden, command kept", codex)
	}

	demo, _ := r.Get("demo")
	if demo.StartURL != "" || !slices.Equal(demo.LoginCommand, []string{"demo-cli", "login"}) {
		t.Errorf("got demo %+v, want start_url cleared and a command", demo)
	}

	if _, ok := r.Get("gemini_cli"); ok {
		t.Errorf("disabled gemini_cli is still there")
	}

	acme, _ := r.Get("acme")
	wantAcme := mc.Provider{Name: "acme", DisplayName: "acme", LoginCommand: []string{"acme", "login"},
		Files:        []mc.CredentialFile{{Path: "~/.acme/token.json", RequiredKeys: []string{"token"}}, {Path: ".acme/refresh"}},
		LoginTimeout: DefaultLoginTimeout}
	if !reflect.DeepEqual(acme, wantAcme) {
		t.Errorf("got acme %+v, want %+v (defaults applied)", acme, wantAcme)
	}

	sso, _ := r.Get("intranet")
	if sso.DisplayName != "Intranet SSO" || sso.LoginTimeout != 5*time.Minute || sso.StartURL != "https://sso.example.com/login" {
		t.Errorf("got intranet %+v", sso)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{name: "not JSON", content: `{"providers": [`, want: []string{"not a provider configuration"}},
		{name: "empty file", content: ``, want: []string{"empty file"}},
		{name: "unknown field", content: `{"providers": [{"name": "demo", "requiredKeys": []}]}`, want: []string{`unknown field "requiredKeys"`}},
		{name: "wrong type", content: `{"providers": [{"name": "demo", "login_command": "demo login"}]}`, want: []string{"login_command"}},
		{name: "trailing data", content: `{"providers": []} {}`, want: []string{"data after the JSON object"}},
		{name: "no name", content: `{"providers": [{"display_name": "X"}]}`, want: []string{"providers[0]: name is missing"}},
		{name: "listed twice", content: `{"providers": [{"name": "demo"}, {"name": "demo"}]}`, want: []string{`provider "demo": listed twice`}},
		{name: "bad duration", content: `{"providers": [{"name": "demo", "login_timeout": "10"}]}`, want: []string{`login_timeout "10" is not a duration`}},
		{name: "timeout out of bounds", content: `{"providers": [{"name": "demo", "login_timeout": "5s"}]}`, want: []string{`provider "demo": login_timeout 5s is outside`}},
		{name: "override breaks a built-in", content: `{"providers": [{"name": "demo", "start_url": ""}]}`, want: []string{`provider "demo": needs a start_url or a login_command`}},
		{name: "new provider without files", content: `{"providers": [{"name": "acme", "start_url": "https://x.example"}]}`, want: []string{`provider "acme": needs at least one file`}},
		{name: "new provider, bad name and path", content: `{"providers": [{"name": "Acme", "start_url": "https://x.example", "files": [{"path": "/etc/shadow"}]}]}`,
			want: []string{"name must match", "not absolute"}},
		{name: "one problem per provider", content: `{"providers": [
			{"name": "aa", "login_command": ["a"], "files": [{"path": "~/../x"}]},
			{"name": "bb", "login_command": ["b"], "files": [{"path": "~/y"}], "login_timeout": "3h"}]}`,
			want: []string{`provider "aa"`, `provider "bb"`}},
		{name: "unknown recipe field", content: `{"providers": [{"name": "codex", "open_url": {"regexp": "x"}}]}`, want: []string{`open_url: json: unknown field "regexp"`}},
		{name: "recipe problems, one by one", content: `{"providers": [{"name": "codex",
			"env": {"PATH": "/x", "1BAD": "y"},
			"seed_files": [{"path": "/etc/hosts", "content": "x"}],
			"answers": [{"pattern": "(", "keys": "\r"}, {"pattern": "ok", "keys": ""}],
			"paste_back": {"url_prefix": "file:///x", "template": "code"},
			"stdout_capture": {"pattern": "token", "file": "../t"},
			"kind": "password"}]}`,
			want: []string{`env key "1BAD" is not a variable name`, `env key "PATH" is set by the agent`,
				`seed_files[0].path "/etc/hosts"`, `answers[0].pattern is not a regular expression`, `answers[1].keys is empty`,
				`paste_back.url_prefix must be an http(s) URL`, `paste_back.template names no query value`,
				`stdout_capture.pattern has no group`, `stdout_capture.file "../t"`, `kind "password"`}},
		{name: "recipe without a command", content: `{"providers": [{"name": "demo", "answers": [{"pattern": "x", "keys": "y"}]}]}`,
			want: []string{"need a login_command"}},
		{name: "everything disabled", content: `{"providers": [{"name": "demo", "disabled": true}, {"name": "codex", "disabled": true},
			{"name": "claude_code", "disabled": true}, {"name": "gemini_cli", "disabled": true}]}`, want: []string{"every provider is disabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			r, err := Load(path)
			if err == nil {
				t.Fatalf("got registry %v, want an error", r.Names())
			}
			checkProblems(t, err, tt.want)
			if !strings.Contains(err.Error(), path) {
				t.Errorf("got %q, want the file's path in it", err)
			}
		})
	}
}

func TestLoadRecipeOverride(t *testing.T) {
	r, err := Load(writeConfig(t, `{"providers": [
		{"name": "codex", "open_url": null, "env": {"CODEX_HOME": "~/.codex", "SSL_CERT_FILE": "/ca.pem"}},
		{"name": "acme", "login_command": ["acme", "setup-token"], "kind": "token",
		 "stdout_capture": {"pattern": "token: (\\S+)", "file": "~/.acme/token.json"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	codex, _ := r.Get("codex")
	if codex.OpenURL != nil || codex.Env["SSL_CERT_FILE"] != "/ca.pem" || len(codex.SeedFiles) != 1 {
		t.Errorf("codex: open_url %+v env %v seed %d, want open_url cleared, env replaced, seed files kept", codex.OpenURL, codex.Env, len(codex.SeedFiles))
	}
	acme, _ := r.Get("acme")
	if acme.StdoutCapture == nil || acme.StdoutCapture.File != "~/.acme/token.json" || acme.Kind != mc.KindToken || len(acme.Files) != 0 {
		t.Errorf("acme: %+v, want a stdout capture and no files", acme)
	}
}

func TestLoadWithoutFile(t *testing.T) {
	r, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(r.All()), 4; got != want {
		t.Errorf("got %d providers, want %d", got, want)
	}
	_, err = Load(filepath.Join(t.TempDir(), "missing.json"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want a not-exist error", err)
	}
}
