// Package vault seals credentials at rest with AES-256-GCM and keeps them in
// an mc.CredentialStore, auditing every read and delete.
//
// Each record has a random 96-bit nonce, the (user_id, provider) pair as
// associated data (length-prefixed, so that ("ab","c") and ("a","bc") differ),
// and the id of the key that sealed it, so that a record moved to another
// user or provider does not open, and keys can be rotated.
package vault

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	mc "github.com/master-controller/mc"
)

// NonceSize is the length of a record's nonce (the GCM standard nonce).
const NonceSize = 12

// The causes of a vault_open_failed error, for errors.Is. None of them
// carries key material or plaintext.
var (
	// ErrUnknownKey: the record names a key id that the keyring does not hold.
	ErrUnknownKey = errors.New("sealed with a key id that is not configured")
	// ErrTruncated: the nonce or ciphertext is too short to be a record.
	ErrTruncated = errors.New("nonce or ciphertext truncated")
	// ErrAuthentication: GCM authentication failed: a wrong key under the
	// right id, a tampered ciphertext, or a record moved to another
	// (user, provider).
	ErrAuthentication = errors.New("authentication failed (wrong key, tampered record or mismatched user/provider)")
	// ErrCorrupt: the record authenticated but its content is not a credential.
	ErrCorrupt = errors.New("opened record is not a credential")
)

// adLabel separates this use of the keys from any other.
const adLabel = "mc-vault-v1"

// Vault seals and opens credentials with a keyring. It is safe for
// concurrent use.
type Vault struct {
	keys *Keyring
}

// New returns a vault over the keyring; kr's first key seals new records.
func New(kr *Keyring) *Vault { return &Vault{keys: kr} }

// Keys returns the vault's keyring.
func (v *Vault) Keys() *Keyring { return v.keys }

// payload is what is sealed. The session id and capture time are sealed too,
// so that Open returns authenticated values, not the store's copies.
type payload struct {
	SessionID  string            `json:"session_id"`
	CapturedAt time.Time         `json:"captured_at"`
	Files      map[string]string `json:"files"`
}

// AssociatedData returns the canonical encoding of (userID, provider) that
// binds a record to its owner: a label, then each string prefixed by its
// length as 4 bytes big-endian.
func AssociatedData(userID, provider string) []byte {
	b := make([]byte, 0, len(adLabel)+8+len(userID)+len(provider))
	b = append(b, adLabel...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(userID)))
	b = append(b, userID...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(provider)))
	b = append(b, provider...)
	return b
}

// Seal encrypts c under the primary key with a fresh random nonce.
// Errors: EINVALID (reason "invalid_credential") for a credential without
// user, provider or files; EINTERNAL (reason "vault_seal_failed").
func (v *Vault) Seal(c mc.Credential) (mc.SealedCredential, error) {
	if c.UserID == "" || c.Provider == "" {
		return mc.SealedCredential{}, mc.Errorf(mc.EINVALID, mc.ReasonInvalidCredential, "a credential needs a user id and a provider")
	}
	if len(c.Files) == 0 {
		return mc.SealedCredential{}, mc.Errorf(mc.EINVALID, mc.ReasonInvalidCredential, "a credential needs at least one file")
	}
	k := v.keys.keys[0]
	plain, err := json.Marshal(payload{SessionID: c.SessionID, CapturedAt: c.CapturedAt.UTC(), Files: c.Files})
	if err != nil {
		// Strings in a map cannot fail to marshal; keep the cause out anyway.
		return mc.SealedCredential{}, &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonVaultSealFailed, Message: "credential could not be sealed",
			Err: fmt.Errorf("seal credential of user %q provider %q: encode failed", c.UserID, c.Provider)}
	}
	defer clear(plain)
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return mc.SealedCredential{}, &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonVaultSealFailed, Message: "credential could not be sealed",
			Err: fmt.Errorf("seal credential of user %q provider %q: nonce: %w", c.UserID, c.Provider, err)}
	}
	return mc.SealedCredential{
		UserID:     c.UserID,
		Provider:   c.Provider,
		SessionID:  c.SessionID,
		KeyID:      k.id,
		Nonce:      nonce,
		Ciphertext: k.aead.Seal(nil, nonce, plain, AssociatedData(c.UserID, c.Provider)),
		CapturedAt: c.CapturedAt.UTC(),
		Meta:       c.Meta,
	}, nil
}

// Open decrypts s with the key its KeyID names and checks that it belongs to
// s.UserID and s.Provider. It never returns unauthenticated content.
// Errors: EINTERNAL (reason "vault_open_failed") wrapping ErrUnknownKey,
// ErrTruncated, ErrAuthentication or ErrCorrupt.
func (v *Vault) Open(s mc.SealedCredential) (mc.Credential, error) {
	fail := func(cause error) (mc.Credential, error) {
		return mc.Credential{}, &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonVaultOpenFailed, Message: "stored credential could not be opened",
			Err: fmt.Errorf("open credential of user %q provider %q (key id %q): %w", s.UserID, s.Provider, s.KeyID, cause)}
	}
	k, ok := v.keys.lookup(s.KeyID)
	if !ok {
		return fail(ErrUnknownKey)
	}
	if len(s.Nonce) != NonceSize || len(s.Ciphertext) < k.aead.Overhead() {
		return fail(ErrTruncated)
	}
	plain, err := k.aead.Open(nil, s.Nonce, s.Ciphertext, AssociatedData(s.UserID, s.Provider))
	if err != nil {
		return fail(ErrAuthentication)
	}
	defer clear(plain)
	var p payload
	if err := json.Unmarshal(plain, &p); err != nil || p.Files == nil {
		return fail(ErrCorrupt) // not err: a syntax error may quote the plaintext
	}
	return mc.Credential{
		UserID:     s.UserID,
		Provider:   s.Provider,
		SessionID:  p.SessionID,
		CapturedAt: p.CapturedAt,
		Meta:       s.Meta,
		Files:      p.Files,
	}, nil
}
