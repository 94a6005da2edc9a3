package mc

import "time"

// Provider describes how one login works, as a complete recipe: what runs in
// the machine, what it is told, what the agent answers for it, and what it
// produces. Providers are data: built-ins come from package provider, more
// (and overrides) from a configuration file.
type Provider struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	// StartURL is opened in the machine's browser when the login starts.
	StartURL string `json:"start_url,omitempty"`
	// LoginCommand, when set, runs inside the machine under a wide
	// pseudo-terminal, in the home directory, with BROWSER and an xdg-open
	// first on PATH that open a URL in the machine's browser.
	LoginCommand []string `json:"login_command,omitempty"`
	// Env is added to the login command's environment; a value that starts
	// with "~/" is a path in the machine user's home.
	Env map[string]string `json:"env,omitempty"`
	// SeedFiles are written into the home before the command starts (CLI
	// settings that skip menus or pin where credentials are stored).
	SeedFiles []SeedFile `json:"seed_files,omitempty"`
	// Answers are typed into the terminal when its output matches.
	Answers []Answer `json:"answers,omitempty"`
	// OpenURL says which URL the command prints is opened in the browser,
	// for CLIs that print rather than launch one. Nil opens none.
	OpenURL *OpenURL `json:"open_url,omitempty"`
	// PasteBack is the fallback for flows whose callback is not local: when
	// the browser's tab reaches URLPrefix, values of its query are typed
	// into the terminal.
	PasteBack *PasteBack `json:"paste_back,omitempty"`
	// StdoutCapture takes the credential from the command's output (a CLI
	// that prints a token rather than writing a file).
	StdoutCapture *StdoutCapture `json:"stdout_capture,omitempty"`
	// Files are the credential files the login writes, relative to the
	// machine user's home ("~/" prefix allowed).
	Files []CredentialFile `json:"files"`
	// Kind is what the credential is: oauth, api_key or token.
	Kind CredentialKind `json:"kind,omitempty"`
	// LoginTimeout bounds the login once it has started.
	LoginTimeout time.Duration `json:"login_timeout"`
}

// CredentialKind says what a captured credential is.
type CredentialKind string

// Credential kinds.
const (
	KindOAuth  CredentialKind = "oauth"
	KindAPIKey CredentialKind = "api_key"
	KindToken  CredentialKind = "token"
)

// CLI is the program a provider needs installed in the machine (its login
// command's first word), or "" when it runs none.
func (p Provider) CLI() string {
	if len(p.LoginCommand) == 0 {
		return ""
	}
	return p.LoginCommand[0]
}

// CredentialFile is one file that holds (part of) a login's result.
type CredentialFile struct {
	Path string `json:"path"`
	// RequiredKeys are JSON keys (dotted paths walk nested objects, for
	// example "claudeAiOauth.accessToken") that must hold a non-empty value
	// (not null, "", [] or {}) for the file to count as complete.
	RequiredKeys []string `json:"required_keys,omitempty"`
}

// SeedFile is a file written into the machine user's home before the login
// command runs. "{home}" in Content is replaced with the home directory.
type SeedFile struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

// Answer types Keys into the terminal each time Pattern (a regular
// expression) matches output that came after the previous match.
type Answer struct {
	Pattern string `json:"pattern"`
	Keys    string `json:"keys"`
}

// OpenURL selects a printed URL to open. Loopback URLs (a CLI's own
// callback server) are never opened.
type OpenURL struct {
	// Match is a regular expression the URL must match ("" matches any).
	Match string `json:"match,omitempty"`
}

// PasteBack types Template into the terminal when the browser's tab URL
// starts with URLPrefix; "{name}" in Template is the query value name of
// that URL (for example "{code}#{state}\r").
type PasteBack struct {
	URLPrefix string `json:"url_prefix"`
	Template  string `json:"template"`
}

// StdoutCapture takes the first submatch of Pattern in the command's output
// as the credential, delivered as File: {"token": "<value>"}.
type StdoutCapture struct {
	Pattern string `json:"pattern"`
	File    string `json:"file"`
}
