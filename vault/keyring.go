package vault

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	mc "github.com/master-controller/mc"
)

// KeySize is the length of a vault key: AES-256.
const KeySize = 32

// KeyFileName is the name of the key file that Load keeps in the data
// directory when no key is configured.
const KeyFileName = "vault.keys"

var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// key is one named AES-256 key. The raw key is kept only as an mc.Secret and
// inside the AEAD, never in a field that fmt would print.
type key struct {
	id   string
	raw  mc.Secret
	aead cipher.AEAD
}

// Keyring holds the vault keys by id. The first key seals new records; every
// key opens the records that carry its id, so that old records stay readable
// until Rotate has re-sealed them. A Keyring prints only its key ids.
type Keyring struct {
	keys []key
}

// Config says where the vault keys come from, in order of precedence: Keys
// (the value of MC_VAULT_KEYS), then KeyFile, then a key file in DataDir that
// is generated when it does not exist.
type Config struct {
	// Keys is "id:base64key,id2:base64key"; the first key seals new records.
	Keys mc.Secret
	// KeyFile is a file of "id:base64key" lines (same order rule; blank lines
	// and lines starting with # are ignored).
	KeyFile string
	// DataDir holds vault.keys when neither Keys nor KeyFile is set.
	DataDir string
}

// Load returns the keyring that c describes and checks it against the
// sealed records in store: every key id that a record names must be
// configured, and each such key must open a record sealed under it. A key is
// generated (into DataDir/vault.keys, with an id derived from the key) only
// when no key is configured and the store holds no sealed record; created
// reports that, and the caller should log it (with Keyring.Primary, never
// the key).
// Errors: EINVALID (reason "bad_vault_key" or "no_vault_keys"); EINVALID
// (reason "vault_key_missing") naming the key ids that the records need and
// no configured key opens; the store's errors.
func Load(ctx context.Context, c Config, store mc.CredentialStore) (kr *Keyring, created bool, err error) {
	need, err := keysInUse(ctx, store)
	if err != nil {
		return nil, false, err
	}
	switch {
	case !c.Keys.IsZero():
		kr, err = ParseKeys(c.Keys)
		if err != nil {
			return nil, false, fmt.Errorf("parse MC_VAULT_KEYS: %w", err)
		}
	case c.KeyFile != "":
		kr, err = ReadKeyFile(c.KeyFile)
	case c.DataDir != "":
		kr, created, err = loadOrCreate(c.DataDir, slices.Sorted(maps.Keys(need)))
	default:
		return nil, false, mc.Errorf(mc.EINVALID, mc.ReasonNoVaultKeys, "no vault key configured (MC_VAULT_KEYS, a key file, or a data directory)")
	}
	if err != nil {
		return nil, false, err
	}
	if err := kr.check(need); err != nil {
		return nil, false, err
	}
	return kr, created, nil
}

// ReasonKeyMissing is mc.ReasonVaultKeyMissing under the name app's tests
// know it by.
const ReasonKeyMissing = mc.ReasonVaultKeyMissing

// keysInUse returns, for each key id that the store's sealed records name,
// one record sealed under it.
func keysInUse(ctx context.Context, store mc.CredentialStore) (map[string]mc.SealedCredential, error) {
	recs, err := store.Credentials(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list sealed credentials to check the vault keys: %w", err)
	}
	need := make(map[string]mc.SealedCredential)
	for _, r := range recs {
		if _, ok := need[r.KeyID]; !ok {
			need[r.KeyID] = r
		}
	}
	return need, nil
}

// check verifies that kr opens one record of each key id in need.
func (kr *Keyring) check(need map[string]mc.SealedCredential) error {
	var missing, wrong []string
	v := New(kr)
	for id, rec := range need {
		if _, ok := kr.lookup(id); !ok {
			missing = append(missing, id)
		} else if _, err := v.Open(rec); errors.Is(err, ErrAuthentication) {
			wrong = append(wrong, id)
		}
	}
	if len(missing)+len(wrong) == 0 {
		return nil
	}
	slices.Sort(missing)
	slices.Sort(wrong)
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("records sealed with vault key id(s) %s, which no configured key has", strings.Join(missing, ", ")))
	}
	if len(wrong) > 0 {
		parts = append(parts, fmt.Sprintf("records sealed with vault key id(s) %s, which the configured key(s) of that id do not open", strings.Join(wrong, ", ")))
	}
	return mc.Errorf(mc.EINVALID, mc.ReasonVaultKeyMissing,
		"the store holds %s (configured: %s); configure those keys (MC_VAULT_KEYS or MC_VAULT_KEY_FILE, or restore the data directory's %s)",
		strings.Join(parts, "; and "), strings.Join(kr.IDs(), ", "), KeyFileName)
}

// ParseKeys parses "id:base64key,id2:base64key". The first key seals new
// records. Keys are 32 bytes, in standard or URL-safe base64, padded or not.
// Errors: EINVALID (reason "bad_vault_key" or "no_vault_keys"); the message
// names the key by position and id, never by its value.
func ParseKeys(s mc.Secret) (*Keyring, error) {
	return parseEntries(strings.Split(s.Reveal(), ","), "key")
}

// ReadKeyFile reads a key file: one "id:base64key" per line, the first one
// sealing new records; blank lines and lines starting with # are ignored.
// Errors: EINVALID (reason "bad_vault_key" or "no_vault_keys"), or the
// error of reading the file.
func ReadKeyFile(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read vault key file %s: %w", path, err)
	}
	kr, err := parseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("read vault key file %s: %w", path, err)
	}
	return kr, nil
}

func parseKeyFile(b []byte) (*Keyring, error) {
	var entries []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			line = "" // keeps the line numbers of later keys right
		}
		entries = append(entries, line)
	}
	if err := sc.Err(); err != nil {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "vault key file is not readable as lines")
	}
	return parseEntries(entries, "line")
}

// parseEntries parses "id:base64" entries; where is "key" (the n-th entry of
// a list, where blank entries are errors) or "line" (a file line, where blank
// entries are skipped).
func parseEntries(entries []string, where string) (*Keyring, error) {
	kr := &Keyring{}
	seen := map[string]bool{}
	for i, e := range entries {
		e = strings.TrimSpace(e)
		pos := fmt.Sprintf("%s %d", where, i+1)
		if e == "" {
			if where == "line" {
				continue
			}
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "vault %s is empty", pos)
		}
		id, b64, ok := strings.Cut(e, ":")
		if !ok {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "vault %s: want id:base64key", pos)
		}
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if !keyIDPattern.MatchString(id) {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "vault %s: key id must match %s", pos, keyIDPattern)
		}
		if seen[id] {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "vault %s: duplicate key id %q", pos, id)
		}
		seen[id] = true
		raw, err := decodeKey(b64)
		if err != nil {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "vault %s (id %q): %s", pos, id, err)
		}
		k, err := newKey(id, raw)
		if err != nil {
			return nil, fmt.Errorf("vault %s (id %q): %w", pos, id, err)
		}
		kr.keys = append(kr.keys, k)
	}
	if len(kr.keys) == 0 {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonNoVaultKeys, "no vault keys given")
	}
	return kr, nil
}

// decodeKey decodes a base64 key of KeySize bytes. Its errors never contain
// the input.
func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("key is empty")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		raw, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("key is %d bytes, want %d", len(raw), KeySize)
		}
		return raw, nil
	}
	return nil, errors.New("key is not valid base64")
}

func newKey(id string, raw []byte) (key, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "key is not an AES-256 key")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonBadVaultKey, Message: "cannot make AES-GCM", Err: err}
	}
	return key{id: id, raw: mc.SecretOf(string(raw)), aead: aead}, nil
}

// NewKeyring returns a keyring of one freshly generated key with the given id.
func NewKeyring(id string) (*Keyring, error) {
	if !keyIDPattern.MatchString(id) {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadVaultKey, "key id must match %s", keyIDPattern)
	}
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate vault key: %w", err)
	}
	k, err := newKey(id, raw)
	if err != nil {
		return nil, err
	}
	return &Keyring{keys: []key{k}}, nil
}

// GenerateKeyring returns a keyring of one freshly generated key whose id is
// derived from the key (KeyID), so that no two keys ever share an id.
func GenerateKeyring() (*Keyring, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate vault key: %w", err)
	}
	k, err := newKey(KeyID(raw), raw)
	if err != nil {
		return nil, err
	}
	return &Keyring{keys: []key{k}}, nil
}

// KeyID derives a key id from a raw key: "k-" and 16 hex digits of a
// labelled SHA-256 of the key. It reveals nothing usable of the key and
// differs for different keys.
func KeyID(raw []byte) string {
	h := sha256.New()
	h.Write([]byte("mc-vault-key-id-v1\x00"))
	h.Write(raw)
	return "k-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// loadOrCreate reads dataDir/vault.keys, or, when it does not exist and no
// stored record needs a key (need, the key ids the records name, is empty),
// generates one key into it (mode 0600, the directory created 0700 if
// needed) and reports created.
// Errors: EINVALID (reason "vault_key_missing", naming the ids in need) when
// the file does not exist and need is not empty.
func loadOrCreate(dataDir string, need []string) (kr *Keyring, created bool, err error) {
	path := filepath.Join(dataDir, KeyFileName)
	kr, err = ReadKeyFile(path)
	if err == nil {
		return kr, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if len(need) > 0 {
		return nil, false, &mc.Error{Code: mc.EINVALID, Reason: mc.ReasonVaultKeyMissing, Err: err,
			Message: fmt.Sprintf("no vault key is configured and %s does not exist, but the store holds records sealed with "+
				"vault key id(s) %s: configure those keys (MC_VAULT_KEYS or MC_VAULT_KEY_FILE) or restore the file; "+
				"no key is generated over sealed records", path, strings.Join(need, ", "))}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create vault key file %s: %w", path, err)
	}
	kr, err = GenerateKeyring()
	if err != nil {
		return nil, false, err
	}
	content := "# master-controller vault keys: id:base64key, one a line; the first seals new records.\n" +
		"# Keep this file secret and backed up: without it the sealed credentials cannot be opened.\n" +
		kr.Encode()
	// O_EXCL: if another process created the file since we looked, use its key
	// rather than overwrite a key that may already seal records.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		kr, err = ReadKeyFile(path)
		return kr, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create vault key file %s: %w", path, err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("write vault key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("write vault key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("write vault key file %s: %w", path, err)
	}
	return kr, true, nil
}

// Purposes of the keys that Derive makes from the vault keys.
const (
	// PurposeMachineSecrets derives the mc.MachineKey of machine secrets.
	PurposeMachineSecrets = "machine-secrets"
	// PurposeViewerTokens derives the viewer-token signing key.
	PurposeViewerTokens = "viewer-tokens"
)

// Derive returns a 32-byte key for purpose, derived (HKDF-SHA256) from the
// primary key: every replica configured with the same keys derives the same
// key, and it is never stored. Keys for different purposes are independent.
func (kr *Keyring) Derive(purpose string) mc.Secret { return kr.keys[0].derive(purpose) }

// DeriveAll returns the key for purpose derived from each vault key, the
// primary's first, so that what a replica made under an earlier primary
// (a viewer token) is still accepted while the primary changes.
func (kr *Keyring) DeriveAll(purpose string) []mc.Secret {
	out := make([]mc.Secret, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = k.derive(purpose)
	}
	return out
}

func (k key) derive(purpose string) mc.Secret {
	b, err := hkdf.Key(sha256.New, []byte(k.raw.Reveal()), nil, "mc-vault-derive-v1\x00"+purpose, KeySize)
	if err != nil {
		panic("hkdf: " + err.Error()) // only for a length HKDF cannot make
	}
	return mc.SecretOf(string(b))
}

// Primary returns the id of the key that seals new records.
func (kr *Keyring) Primary() string { return kr.keys[0].id }

// IDs returns the key ids, the primary first.
func (kr Keyring) IDs() []string {
	ids := make([]string, len(kr.keys))
	for i, k := range kr.keys {
		ids[i] = k.id
	}
	return ids
}

// With returns a new keyring with k's keys first (k's primary becomes the
// primary) and then those of kr whose ids k does not have.
func (kr *Keyring) With(k *Keyring) *Keyring {
	out := &Keyring{keys: append([]key(nil), k.keys...)}
	for _, old := range kr.keys {
		if _, ok := k.lookup(old.id); !ok {
			out.keys = append(out.keys, old)
		}
	}
	return out
}

// Without returns a new keyring without the key of the given id.
// Errors: EINVALID (reason "no_vault_keys") when that would leave none.
func (kr *Keyring) Without(id string) (*Keyring, error) {
	out := &Keyring{}
	for _, k := range kr.keys {
		if k.id != id {
			out.keys = append(out.keys, k)
		}
	}
	if len(out.keys) == 0 {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonNoVaultKeys, "cannot remove the last vault key")
	}
	return out, nil
}

// Encode returns the keyring in key-file form, "id:base64key" lines, the
// primary first. It is the one method that reveals the keys: write its
// result only to a 0600 file.
func (kr *Keyring) Encode() string {
	var b strings.Builder
	for _, k := range kr.keys {
		b.WriteString(k.id + ":" + base64.StdEncoding.EncodeToString([]byte(k.raw.Reveal())) + "\n")
	}
	return b.String()
}

// String lists the key ids only.
func (kr Keyring) String() string {
	return "vault.Keyring[" + strings.Join(kr.IDs(), ",") + "]"
}

// GoString lists the key ids only, so %#v hides the keys too.
func (kr Keyring) GoString() string { return kr.String() }

func (kr *Keyring) lookup(id string) (key, bool) {
	for _, k := range kr.keys {
		if k.id == id {
			return k, true
		}
	}
	return key{}, false
}
