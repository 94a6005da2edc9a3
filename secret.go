package mc

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
)

// Secret holds a value that must never be logged, printed or serialized by
// accident: it formats, logs and marshals as REDACTED. Reveal returns the
// value for the one place that needs it.
type Secret struct{ v string }

// Redacted is what a Secret shows instead of its value.
const Redacted = "REDACTED"

// NewSecret returns a random secret of n bytes of entropy, URL-safe encoded.
func NewSecret(n int) Secret {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return Secret{base64.RawURLEncoding.EncodeToString(b)}
}

// SecretOf wraps a known value.
func SecretOf(v string) Secret { return Secret{v} }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// String returns REDACTED (or "" for an empty secret).
func (s Secret) String() string {
	if s.v == "" {
		return ""
	}
	return Redacted
}

// GoString returns REDACTED, so %#v hides it too.
func (s Secret) GoString() string { return `mc.Secret("` + Redacted + `")` }

// LogValue makes slog print REDACTED.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON writes "REDACTED".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText writes REDACTED.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
