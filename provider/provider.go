// Package provider holds the login providers as data: the built-in ones
// (demo, claude_code, codex, gemini_cli), overridden and extended by a JSON
// configuration file.
//
// # Built-in providers
//
//	demo         local:/demo/signin in the machine's browser (the agent's own
//	             page); ~/.demo/credentials.json with access_token; 10 minutes.
//	claude_code  `claude auth login` (Claude Code 2.1 and later; older versions
//	             log in from `claude` with /login); ~/.claude/.credentials.json
//	             with claudeAiOauth.accessToken; 15 minutes.
//	codex        `codex login` (ChatGPT sign-in, callback on localhost:1455
//	             inside the machine); ~/.codex/auth.json with
//	             tokens.access_token and tokens.refresh_token; 15 minutes. A
//	             deployment that signs in with an API key instead overrides
//	             required_keys with ["OPENAI_API_KEY"].
//	gemini_cli   `gemini` (it has no login subcommand: with Google sign-in
//	             selected in ~/.gemini/settings.json it prints the OAuth URL and
//	             waits for the callback on localhost); ~/.gemini/oauth_creds.json
//	             with access_token and refresh_token; 15 minutes.
//
// The CLI commands are the best known ones at the time of writing; CLIs
// change, so every field can be overridden by the configuration file.
//
// # Configuration file
//
//	{
//	  "providers": [
//	    {"name": "claude_code", "login_command": ["claude", "/login"], "pool": 2},
//	    {"name": "gemini_cli", "disabled": true},
//	    {"name": "acme", "display_name": "Acme CLI",
//	     "login_command": ["acme", "login"], "login_timeout": "5m",
//	     "files": [{"path": "~/.acme/token.json", "required_keys": ["token"]}]}
//	  ]
//	}
//
// An entry whose name is a built-in overrides only the fields it sets (an
// empty string or list clears one); "disabled": true removes the provider.
// Any other name adds a provider (display_name defaults to the name,
// login_timeout to 15 minutes). "pool": N keeps N pre-started machines for
// the provider (MC_POOL overrides it). Unknown fields are errors. Every
// provider, built-in or not, must then pass Validate.
package provider

import (
	"fmt"
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
const ReasonBadProvider mc.Reason = "invalid_provider"

// NamePattern is what a provider name must match.
var NamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{1,31}$`)

// Builtins returns fresh copies of the built-in providers, sorted by name.
func Builtins() []mc.Provider {
	return []mc.Provider{
		{
			Name:         "claude_code",
			DisplayName:  "Claude Code",
			LoginCommand: []string{"claude", "auth", "login"},
			Files: []mc.CredentialFile{{
				Path:         "~/.claude/.credentials.json",
				RequiredKeys: []string{"claudeAiOauth.accessToken"},
			}},
			LoginTimeout: DefaultLoginTimeout,
		},
		{
			Name:         "codex",
			DisplayName:  "Codex",
			LoginCommand: []string{"codex", "login"},
			Files: []mc.CredentialFile{{
				Path:         "~/.codex/auth.json",
				RequiredKeys: []string{"tokens.access_token", "tokens.refresh_token"},
			}},
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
			LoginTimeout: DemoLoginTimeout,
		},
		{
			Name:         "gemini_cli",
			DisplayName:  "Gemini CLI",
			LoginCommand: []string{"gemini"},
			Files: []mc.CredentialFile{{
				Path:         "~/.gemini/oauth_creds.json",
				RequiredKeys: []string{"access_token", "refresh_token"},
			}},
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
	case len(p.Files) == 0:
		add("needs at least one file")
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
	files := make([]mc.CredentialFile, len(p.Files))
	for i, f := range p.Files {
		files[i] = mc.CredentialFile{Path: f.Path, RequiredKeys: slices.Clone(f.RequiredKeys)}
	}
	p.Files = files
	return p
}
