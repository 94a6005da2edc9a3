// Package provider holds the login providers as data: the built-in ones
// (demo, claude_code, codex, gemini_cli), overridden and extended by a JSON
// configuration file.
//
// # Built-in providers
//
// Each is a complete recipe (see mc.Provider): what runs, what it is told,
// what the agent answers, and what counts as a complete credential (every
// required key non-empty). Every login command gets BROWSER and an xdg-open
// first on PATH that open a URL in the machine's visible tab.
//
//	demo         local:/demo/signin in the machine's browser (the agent's own
//	             page); ~/.demo/credentials.json with access_token; 10 minutes.
//	claude_code  `claude auth login` with CLAUDE_CONFIG_DIR=~/.claude: Claude
//	             opens $BROWSER with a localhost callback; paste-back of
//	             code#state from platform.claude.com/oauth/code/callback as the
//	             fallback; ~/.claude/.credentials.json with claudeAiOauth's
//	             accessToken, refreshToken, expiresAt and scopes.
//	codex        `codex login` with CODEX_HOME=~/.codex and config.toml seeded
//	             with cli_auth_credentials_store = "file": Codex opens $BROWSER
//	             (and prints auth.openai.com after its local server), callback
//	             on 127.0.0.1:1455; ~/.codex/auth.json with tokens.id_token,
//	             access_token and refresh_token.
//	gemini_cli   `gemini` with settings.json (oauth-personal) and
//	             trustedFolders.json seeded; Enter answers its auth and consent
//	             menus, then it runs xdg-open with a localhost callback;
//	             paste-back of the code from codeassist.google.com/authcode as
//	             the fallback (NO_BROWSER=true); ~/.gemini/oauth_creds.json with
//	             access_token, refresh_token and expiry_date.
//
// Logins of the three CLIs take at most 15 minutes. The recipes follow the
// CLI versions pinned in clis/package-lock.json; CLIs change, so every field
// can be overridden by the configuration file.
//
// # Configuration file
//
//	{
//	  "providers": [
//	    {"name": "claude_code", "login_command": ["claude", "/login"], "pool": 2},
//	    {"name": "gemini_cli", "disabled": true},
//	    {"name": "acme", "display_name": "Acme CLI",
//	     "login_command": ["acme", "login"], "login_timeout": "5m",
//	     "files": [{"path": "~/.acme/token.json", "required_keys": ["token"]}]},
//	    {"name": "codex", "env": {"CODEX_HOME": "~/.codex", "SSL_CERT_FILE": "/etc/mc/ca.pem"}}
//	  ]
//	}
//
// Fields: display_name, start_url, login_command, env, seed_files
// ([{path, content}]), answers ([{pattern, keys}]), open_url ({match}),
// paste_back ({url_prefix, template}), stdout_capture ({pattern, file}),
// files ([{path, required_keys}]), kind (oauth, api_key, token),
// login_timeout, disabled.
//
// An entry whose name is a built-in overrides only the fields it sets (an
// empty string or list clears one; null clears open_url, paste_back and
// stdout_capture); "disabled": true removes the provider.
// Any other name adds a provider (display_name defaults to the name,
// login_timeout to 15 minutes). "pool": N keeps N pre-started machines for
// the provider (MC_POOL overrides it). Unknown fields are errors. Every
// provider, built-in or not, must then pass Validate.
package provider

import (
	"fmt"
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	mc "github.com/master-controller/mc"
)

// Login timeouts: the default and the bounds that Validate enforces.
const (
	DefaultLoginTimeout = 15 * time.Minute
	DemoLoginTimeout    = 10 * time.Minute
	MinLoginTimeout     = 30 * time.Second
	MaxLoginTimeout     = 2 * time.Hour
)

// Limits that Validate enforces.
const (
	MaxFiles        = 16
	MaxDisplayName  = 64
	MaxStartURL     = 2048
	MaxCommandArgs  = 64
	MaxRequiredKeys = 32
)

// ReasonBadProvider is the reason of a provider configuration error.
const ReasonBadProvider mc.Reason = mc.ReasonInvalidProvider

// NamePattern is what a provider name must match.
var NamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{1,31}$`)

// Builtins returns fresh copies of the built-in providers, sorted by name.
// The recipes follow the pinned CLI versions (clis/package-lock.json):
// re-check them when the pins move.
func Builtins() []mc.Provider {
	return []mc.Provider{
		{
			Name:         "claude_code",
			DisplayName:  "Claude Code",
			LoginCommand: []string{"claude", "auth", "login"},
			// Both of Claude's files (.credentials.json and .claude.json)
			// go to one directory.
			Env: map[string]string{"CLAUDE_CONFIG_DIR": "~/.claude"},
			// Claude launches $BROWSER with a localhost callback: no
			// printed URL needs opening (the compact link it prints is
			// expanded by claude.ai). The full manual link
			// (CLAUDE_CODE_FULL_SIGN_IN_LINK=1) ends on this page, whose
			// code and state Claude's prompt takes as code#state.
			PasteBack: &mc.PasteBack{URLPrefix: "https://platform.claude.com/oauth/code/callback", Template: "{code}#{state}\r"},
			Files: []mc.CredentialFile{{
				Path: "~/.claude/.credentials.json",
				RequiredKeys: []string{"claudeAiOauth.accessToken", "claudeAiOauth.refreshToken",
					"claudeAiOauth.expiresAt", "claudeAiOauth.scopes"},
				ExpiresKey: "claudeAiOauth.expiresAt", RefreshExpiresKey: "claudeAiOauth.refreshTokenExpiresAt",
			}},
			Kind:         mc.KindOAuth,
			LoginTimeout: DefaultLoginTimeout,
		},
		{
			Name:         "codex",
			DisplayName:  "Codex",
			LoginCommand: []string{"codex", "login"},
			Env:          map[string]string{"CODEX_HOME": "~/.codex"},
			SeedFiles: []mc.SeedFile{{
				// A file, never the keyring (there is none in a machine).
				Path: "~/.codex/config.toml", Content: "cli_auth_credentials_store = \"file\"\n",
			}},
			// Codex launches $BROWSER; it also prints its local server
			// first and the authorize URL after it.
			OpenURL: &mc.OpenURL{Match: `^https://auth\.openai\.com/`},
			Files: []mc.CredentialFile{{
				Path:         "~/.codex/auth.json",
				RequiredKeys: []string{"tokens.id_token", "tokens.access_token", "tokens.refresh_token"},
				// The access token is a JWT; its "exp" is the expiry.
				ExpiresKey: "tokens.access_token",
			}},
			Kind:         mc.KindOAuth,
			LoginTimeout: DefaultLoginTimeout,
		},
		{
			Name:        "demo",
			DisplayName: "Demo",
			StartURL:    "local:/demo/signin",
			Files: []mc.CredentialFile{{
				Path:         "~/.demo/credentials.json",
				RequiredKeys: []string{"access_token"},
			}},
			Kind:         mc.KindOAuth,
			LoginTimeout: DemoLoginTimeout,
		},
		{
			Name:         "gemini_cli",
			DisplayName:  "Gemini CLI",
			LoginCommand: []string{"gemini"},
			SeedFiles: []mc.SeedFile{
				{Path: "~/.gemini/settings.json", Content: `{"security":{"auth":{"selectedType":"oauth-personal"}}}` + "\n"},
				{Path: "~/.gemini/trustedFolders.json", Content: `{"{home}":"TRUST_FOLDER"}` + "\n"},
			},
			// The auth menu and the "open the browser?" menu: Enter takes
			// the first choice of each. Gemini then runs xdg-open.
			Answers: []mc.Answer{
				{Pattern: `Sign in with Google`, Keys: "\r"},
				{Pattern: `Do you want to continue\?`, Keys: "\r"},
			},
			// With NO_BROWSER=true it prints the URL and asks for the code
			// that codeassist.google.com shows.
			OpenURL:   &mc.OpenURL{Match: `^https://accounts\.google\.com/`},
			PasteBack: &mc.PasteBack{URLPrefix: "https://codeassist.google.com/authcode", Template: "{code}\r"},
			Files: []mc.CredentialFile{{
				Path:         "~/.gemini/oauth_creds.json",
				RequiredKeys: []string{"access_token", "refresh_token", "expiry_date"},
				ExpiresKey:   "expiry_date",
			}},
			Kind:         mc.KindOAuth,
			LoginTimeout: DefaultLoginTimeout,
		},
	}
}

// Validate checks one provider and returns every problem it finds, as an
// *mc.Error with code EINVALID, reason "invalid_provider" and a *ConfigError
// cause that lists them one by one.
func Validate(p mc.Provider) error {
	probs := problems(p)
	if len(probs) == 0 {
		return nil
	}
	return configError(probs)
}

// ConfigError lists every problem of a provider configuration.
type ConfigError struct {
	Problems []string
}

// Error joins the problems with "; ".
func (e *ConfigError) Error() string { return strings.Join(e.Problems, "; ") }

func configError(probs []string) error {
	ce := &ConfigError{Problems: probs}
	return &mc.Error{Code: mc.EINVALID, Reason: ReasonBadProvider, Message: ce.Error(), Err: ce}
}

// problems returns one sentence per problem of p, each naming the provider.
func problems(p mc.Provider) []string {
	var out []string
	add := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("provider %q: ", p.Name)+fmt.Sprintf(format, args...))
	}
	if !NamePattern.MatchString(p.Name) {
		add("name must match %s", NamePattern)
	}
	switch {
	case strings.TrimSpace(p.DisplayName) == "":
		add("display_name is empty")
	case len(p.DisplayName) > MaxDisplayName:
		add("display_name is longer than %d bytes", MaxDisplayName)
	case strings.ContainsFunc(p.DisplayName, unicode.IsControl):
		add("display_name contains a control character")
	}
	if p.StartURL == "" && len(p.LoginCommand) == 0 {
		add("needs a start_url or a login_command")
	}
	if p.StartURL != "" {
		if msg := checkStartURL(p.StartURL); msg != "" {
			add("start_url %s", msg)
		}
	}
	if len(p.LoginCommand) > 0 {
		switch {
		case strings.TrimSpace(p.LoginCommand[0]) == "":
			add("login_command[0] (the program) is empty")
		case len(p.LoginCommand) > MaxCommandArgs:
			add("login_command has more than %d arguments", MaxCommandArgs)
		}
		for i, a := range p.LoginCommand {
			if strings.ContainsRune(a, 0) {
				add("login_command[%d] contains a NUL byte", i)
			}
		}
	}
	switch {
	case len(p.Files) == 0 && p.StdoutCapture == nil:
		add("needs at least one file (or a stdout_capture)")
	case len(p.Files) > MaxFiles:
		add("has more than %d files", MaxFiles)
	}
	seen := map[string]bool{}
	for i, f := range p.Files {
		rel, msg := homeRelative(f.Path)
		if msg != "" {
			add("files[%d].path %q %s", i, f.Path, msg)
			continue
		}
		if seen[rel] {
			add("files[%d].path %q is listed twice", i, f.Path)
		}
		seen[rel] = true
		if len(f.RequiredKeys) > MaxRequiredKeys {
			add("files[%d] has more than %d required_keys", i, MaxRequiredKeys)
		}
		for j, k := range f.RequiredKeys {
			if k == "" || slices.Contains(strings.Split(k, "."), "") {
				add("files[%d].required_keys[%d] %q is not a key or a dotted path of keys", i, j, k)
			}
		}
	}
	recipeProblems(p, add)
	if p.LoginTimeout < MinLoginTimeout || p.LoginTimeout > MaxLoginTimeout {
		add("login_timeout %v is outside [%v, %v]", p.LoginTimeout, MinLoginTimeout, MaxLoginTimeout)
	}
	return out
}

// checkStartURL returns why u is not a start URL, or "".
func checkStartURL(u string) string {
	if len(u) > MaxStartURL {
		return fmt.Sprintf("is longer than %d bytes", MaxStartURL)
	}
	if rest, ok := strings.CutPrefix(u, "local:"); ok {
		if !strings.HasPrefix(rest, "/") || strings.ContainsAny(rest, " \t\r\n") {
			return `must be "local:/path" (a page of the machine agent)`
		}
		return ""
	}
	pu, err := url.Parse(u)
	switch {
	case err != nil, pu.Scheme != "https" && pu.Scheme != "http", pu.Host == "":
		// The URL itself is not repeated: it may carry a token.
		return `must be an http(s) URL with a host, or "local:/path"`
	case pu.User != nil:
		return "must not contain a user or password"
	}
	return ""
}

// homeRelative returns p relative to the home directory ("~/" removed), or
// why it is not a path under home.
func homeRelative(p string) (string, string) {
	rel := strings.TrimPrefix(p, "~/")
	switch {
	case p == "":
		return "", "is empty"
	case strings.ContainsRune(p, 0):
		return "", "contains a NUL byte"
	case strings.HasPrefix(rel, "/"):
		return "", `must be under the home directory ("~/…" or relative), not absolute`
	case strings.HasPrefix(rel, "~"):
		return "", `must be under the machine user's home ("~/…")`
	case slices.Contains(strings.Split(rel, "/"), ".."):
		return "", `must not contain ".."`
	case rel == "" || path.Clean(rel) == ".":
		return "", "names the home directory, not a file"
	case path.Clean(rel) != rel:
		return "", fmt.Sprintf("is not a clean path (want %q)", path.Clean(rel))
	}
	return rel, ""
}

// clone returns a deep copy of p, so that no caller shares its slices.
func clone(p mc.Provider) mc.Provider {
	p.LoginCommand = slices.Clone(p.LoginCommand)
	p.Env = maps.Clone(p.Env)
	p.SeedFiles = slices.Clone(p.SeedFiles)
	p.Answers = slices.Clone(p.Answers)
	if p.OpenURL != nil {
		o := *p.OpenURL
		p.OpenURL = &o
	}
	if p.PasteBack != nil {
		b := *p.PasteBack
		p.PasteBack = &b
	}
	if p.StdoutCapture != nil {
		c := *p.StdoutCapture
		p.StdoutCapture = &c
	}
	files := make([]mc.CredentialFile, len(p.Files))
	for i, f := range p.Files {
		f.RequiredKeys = slices.Clone(f.RequiredKeys)
		files[i] = f
	}
	p.Files = files
	return p
}

// Limits of a recipe that Validate enforces.
const (
	MaxEnv       = 32
	MaxSeedFiles = 8
	MaxSeedBytes = 64 << 10
	MaxAnswers   = 16
)

// envName is what an env key must look like.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are set by the agent for every login command; a provider
// cannot change them (BROWSER and PATH carry the opener).
var reservedEnv = []string{"HOME", "PATH", "BROWSER", "TMPDIR", "MC_AGENT_OPENER"}

// recipeProblems checks env, seed_files, answers, open_url, paste_back,
// stdout_capture and kind; add formats one problem.
func recipeProblems(p mc.Provider, add func(string, ...any)) {
	if len(p.Env) > MaxEnv {
		add("env has more than %d variables", MaxEnv)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		switch v := p.Env[k]; {
		case !envName.MatchString(k):
			add("env key %q is not a variable name", k)
		case slices.Contains(reservedEnv, k):
			add("env key %q is set by the agent and cannot be changed", k)
		case strings.ContainsRune(v, 0):
			add("env %s contains a NUL byte", k)
		}
	}
	if len(p.SeedFiles) > MaxSeedFiles {
		add("has more than %d seed_files", MaxSeedFiles)
	}
	for i, f := range p.SeedFiles {
		if _, msg := homeRelative(f.Path); msg != "" {
			add("seed_files[%d].path %q %s", i, f.Path, msg)
		}
		if len(f.Content) > MaxSeedBytes {
			add("seed_files[%d].content is longer than %d bytes", i, MaxSeedBytes)
		}
	}
	if len(p.Answers) > MaxAnswers {
		add("has more than %d answers", MaxAnswers)
	}
	for i, a := range p.Answers {
		if a.Pattern == "" {
			add("answers[%d].pattern is empty", i)
		} else if _, err := regexp.Compile(a.Pattern); err != nil {
			add("answers[%d].pattern is not a regular expression: %v", i, err)
		}
		if a.Keys == "" {
			add("answers[%d].keys is empty", i)
		}
	}
	if len(p.LoginCommand) == 0 && (len(p.Answers) > 0 || p.OpenURL != nil || p.PasteBack != nil || p.StdoutCapture != nil || len(p.SeedFiles) > 0 || len(p.Env) > 0) {
		add("env, seed_files, answers, open_url, paste_back and stdout_capture need a login_command")
	}
	if p.OpenURL != nil && p.OpenURL.Match != "" {
		if _, err := regexp.Compile(p.OpenURL.Match); err != nil {
			add("open_url.match is not a regular expression: %v", err)
		}
	}
	if b := p.PasteBack; b != nil {
		if u, err := url.Parse(b.URLPrefix); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			add("paste_back.url_prefix must be an http(s) URL with a host")
		}
		if !strings.Contains(b.Template, "{") {
			add("paste_back.template names no query value (such as {code})")
		}
	}
	if c := p.StdoutCapture; c != nil {
		re, err := regexp.Compile(c.Pattern)
		switch {
		case c.Pattern == "":
			add("stdout_capture.pattern is empty")
		case err != nil:
			add("stdout_capture.pattern is not a regular expression: %v", err)
		case re.NumSubexp() < 1:
			add("stdout_capture.pattern has no group (the credential is its first group)")
		}
		if _, msg := homeRelative(c.File); msg != "" {
			add("stdout_capture.file %q %s", c.File, msg)
		}
	}
	switch p.Kind {
	case "", mc.KindOAuth, mc.KindAPIKey, mc.KindToken:
	default:
		add("kind %q is not oauth, api_key or token", p.Kind)
	}
}
