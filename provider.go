package mc

import (
	"encoding/json"
	"time"
)

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
	// LoginTimeout bounds the login once it has started. JSON carries it as
	// a Duration string ("15m").
	LoginTimeout time.Duration `json:"login_timeout"`
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
	// RequiredKeys are top-level JSON keys that must be present (dotted paths
	// allowed, for example "claudeAiOauth.accessToken") for the file to count
	// as complete.
	RequiredKeys []string `json:"required_keys,omitempty"`
}
