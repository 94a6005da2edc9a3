package mc

import "time"

// SealedCredential is a credential at rest: AES-256-GCM ciphertext with the
// (user, provider) pair as associated data, and the id of the key that sealed it.
type SealedCredential struct {
	UserID     string    `json:"user_id"`
	Provider   string    `json:"provider"`
	SessionID  string    `json:"session_id"`
	KeyID      string    `json:"key_id"`
	Nonce      []byte    `json:"-"`
	Ciphertext []byte    `json:"-"`
	CapturedAt time.Time `json:"captured_at"`
	// Meta is what the files say about the credential, kept beside the
	// ciphertext (it holds no secret) so that listing needs no opening.
	Meta CredentialMeta `json:"meta"`
}

// CredentialMeta describes a credential without any secret of it.
type CredentialMeta struct {
	Kind CredentialKind `json:"kind,omitempty"`
	// ExpiresAt is when the access token expires, when the files say.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// RefreshExpiresAt is when the refresh token expires, when they say.
	RefreshExpiresAt time.Time `json:"refresh_expires_at,omitzero"`
}

// Credential is an opened credential: the files a login produced, by name.
type Credential struct {
	UserID     string            `json:"user_id"`
	Provider   string            `json:"provider"`
	SessionID  string            `json:"session_id"`
	CapturedAt time.Time         `json:"captured_at"`
	Meta       CredentialMeta    `json:"meta"`
	Files      map[string]string `json:"files"`
}

// AuditEntry records who read or deleted which credential, and when.
type AuditEntry struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`  // the API key's id (never the key)
	Action   string    `json:"action"` // "read", "delete", "list", "rotate"
	UserID   string    `json:"user_id"`
	Provider string    `json:"provider,omitempty"`
	Outcome  string    `json:"outcome"` // "ok" or an error code
}

// AuditFilter selects audit entries. Zero fields do not filter.
type AuditFilter struct {
	UserID string
	Limit  int
}
