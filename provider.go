package mc

import "time"

// Provider describes how one login works: where it starts, what it produces,
// how to tell that it is complete. Providers are data: built-ins come from
// package provider, more from a configuration file.
type Provider struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	// StartURL is opened in the machine's browser when the login starts.
	StartURL string `json:"start_url,omitempty"`
	// LoginCommand, when set, runs inside the machine under a pseudo-terminal;
	// the first URL it prints is opened in the browser.
	LoginCommand []string `json:"login_command,omitempty"`
	// Files are the credential files the login writes, relative to the
	// machine user's home ("~/" prefix allowed).
	Files []CredentialFile `json:"files"`
	// LoginTimeout bounds the login once it has started.
	LoginTimeout time.Duration `json:"login_timeout"`
}

// CredentialFile is one file that holds (part of) a login's result.
type CredentialFile struct {
	Path string `json:"path"`
	// RequiredKeys are top-level JSON keys that must be present (dotted paths
	// allowed, for example "claudeAiOauth.accessToken") for the file to count
	// as complete.
	RequiredKeys []string `json:"required_keys,omitempty"`
}
