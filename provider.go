package mc

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

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
	// LoginTimeout bounds the login once it has started. JSON carries it as
	// a Duration string ("15m").
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

// providerJSON is Provider with its durations as Duration, for JSON.
type providerJSON struct {
	*providerFields
	LoginTimeout Duration `json:"login_timeout"`
}

type providerFields Provider

// MarshalJSON writes p with LoginTimeout as a string ("15m").
func (p Provider) MarshalJSON() ([]byte, error) {
	return json.Marshal(providerJSON{(*providerFields)(&p), Duration(p.LoginTimeout)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *Provider) UnmarshalJSON(b []byte) error {
	v := providerJSON{(*providerFields)(p), Duration(p.LoginTimeout)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p.LoginTimeout = time.Duration(v.LoginTimeout)
	return nil
}

// CredentialFile is one file that holds (part of) a login's result.
type CredentialFile struct {
	Path string `json:"path"`
	// RequiredKeys are JSON keys (dotted paths walk nested objects, for
	// example "claudeAiOauth.accessToken") that must hold a non-empty value
	// (not null, "", [] or {}) for the file to count as complete.
	RequiredKeys []string `json:"required_keys,omitempty"`
	// ExpiresKey and RefreshExpiresKey name (dotted) the access and refresh
	// tokens' expiry in the file: epoch milliseconds or seconds, RFC 3339,
	// or a JWT (the token itself), whose "exp" claim is read unverified.
	ExpiresKey        string `json:"expires_key,omitempty"`
	RefreshExpiresKey string `json:"refresh_expires_key,omitempty"`
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
	// InsteadOfBrowser opens the printed URL and never what the command
	// hands its browser opener: for a flow whose printed link is the one to
	// follow (Claude's full manual link, which ends in paste-back).
	InsteadOfBrowser bool `json:"instead_of_browser,omitempty"`
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

// Meta reads what p's credential files say about the credential: its kind
// and the expiries their ExpiresKey and RefreshExpiresKey name. It never
// returns a secret.
func (p Provider) Meta(files map[string]string) CredentialMeta {
	m := CredentialMeta{Kind: p.Kind}
	for _, f := range p.Files {
		var doc any
		if json.Unmarshal([]byte(files[f.Path]), &doc) != nil {
			continue
		}
		if t := timeAt(doc, f.ExpiresKey); !t.IsZero() {
			m.ExpiresAt = t
		}
		if t := timeAt(doc, f.RefreshExpiresKey); !t.IsZero() {
			m.RefreshExpiresAt = t
		}
	}
	return m
}

// timeAt reads the time at a dotted key: a number of epoch milliseconds
// (or seconds, below 1e11), an RFC 3339 string, or a JWT's "exp" claim;
// zero otherwise.
func timeAt(doc any, key string) time.Time {
	if key == "" {
		return time.Time{}
	}
	for part := range strings.SplitSeq(key, ".") {
		m, ok := doc.(map[string]any)
		if !ok {
			return time.Time{}
		}
		doc = m[part]
	}
	switch v := doc.(type) {
	case float64:
		if v < 1e11 {
			return time.Unix(int64(v), 0).UTC()
		}
		return time.UnixMilli(int64(v)).UTC()
	case string:
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t.UTC()
		}
		return jwtExpiry(v)
	}
	return time.Time{}
}

// jwtExpiry reads the "exp" claim (epoch seconds) of a JWT without checking
// its signature: it is the credential's metadata, never a reason to trust it.
func jwtExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(claims.Exp), 0).UTC()
}
