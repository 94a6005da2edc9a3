package vault

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	mc "github.com/master-controller/mc"
)

// newKeyB64 returns a fresh random 32-byte key in standard base64.
func newKeyB64(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// mustKeys parses a key list or fails the test.
func mustKeys(tb testing.TB, s string) *Keyring {
	tb.Helper()
	kr, err := ParseKeys(mc.SecretOf(s))
	if err != nil {
		tb.Fatalf("ParseKeys: %v", err)
	}
	return kr
}

func TestParseKeys(t *testing.T) {
	k1, k2 := newKeyB64(t), newKeyB64(t)
	raw, _ := base64.StdEncoding.DecodeString(k1)
	urlRaw := base64.RawURLEncoding.EncodeToString(raw)
	short := base64.StdEncoding.EncodeToString(raw[:16])
	long := base64.StdEncoding.EncodeToString(append(raw, raw...))

	tests := []struct {
		name    string
		in      string
		wantIDs []string
		reason  mc.Reason
		errHas  string
	}{
		{name: "one", in: "a:" + k1, wantIDs: []string{"a"}},
		{name: "two, first is primary", in: "new:" + k2 + ",old:" + k1, wantIDs: []string{"new", "old"}},
		{name: "spaces around", in: " a : " + k1 + " , b:" + k2 + " ", wantIDs: []string{"a", "b"}},
		{name: "url-safe unpadded", in: "a:" + urlRaw, wantIDs: []string{"a"}},
		{name: "empty", in: "", reason: mc.ReasonBadVaultKey, errHas: "key 1 is empty"},
		{name: "blank", in: "   ", reason: mc.ReasonBadVaultKey, errHas: "key 1 is empty"},
		{name: "trailing comma", in: "a:" + k1 + ",", reason: mc.ReasonBadVaultKey, errHas: "key 2 is empty"},
		{name: "no colon", in: k1, reason: mc.ReasonBadVaultKey, errHas: "want id:base64key"},
		{name: "empty id", in: ":" + k1, reason: mc.ReasonBadVaultKey, errHas: "key id must match"},
		{name: "bad id", in: "a b:" + k1, reason: mc.ReasonBadVaultKey, errHas: "key id must match"},
		{name: "empty key", in: "a:", reason: mc.ReasonBadVaultKey, errHas: "key is empty"},
		{name: "bad base64", in: "a:" + k1[:10] + "!!" + k1[12:], reason: mc.ReasonBadVaultKey, errHas: "not valid base64"},
		{name: "too short", in: "a:" + short, reason: mc.ReasonBadVaultKey, errHas: "16 bytes, want 32"},
		{name: "too long", in: "a:" + long, reason: mc.ReasonBadVaultKey, errHas: "64 bytes, want 32"},
		{name: "duplicate ids", in: "a:" + k1 + ",a:" + k2, reason: mc.ReasonBadVaultKey, errHas: `duplicate key id "a"`},
		{name: "second bad", in: "a:" + k1 + ",b:" + short, reason: mc.ReasonBadVaultKey, errHas: `key 2 (id "b")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kr, err := ParseKeys(mc.SecretOf(tt.in))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("ParseKeys: %v", err)
				}
				if got := kr.IDs(); !slices.Equal(got, tt.wantIDs) {
					t.Errorf("got ids %v, want %v", got, tt.wantIDs)
				}
				if got, want := kr.Primary(), tt.wantIDs[0]; got != want {
					t.Errorf("got primary %q, want %q", got, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got keyring %v, want error", kr)
			}
			if got := mc.ErrorCode(err); got != mc.EINVALID {
				t.Errorf("got code %q, want %q", got, mc.EINVALID)
			}
			if got := mc.ErrorReason(err); got != tt.reason {
				t.Errorf("got reason %q, want %q", got, tt.reason)
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("got error %q, want it to contain %q", err, tt.errHas)
			}
			for _, k := range []string{k1, k2, urlRaw, short, long, k1[:10]} {
				if strings.Contains(err.Error(), k) {
					t.Errorf("error %q contains key material", err)
				}
			}
		})
	}
}

func TestReadKeyFile(t *testing.T) {
	k1, k2 := newKeyB64(t), newKeyB64(t)
	tests := []struct {
		name    string
		content string
		wantIDs []string
		errHas  string
	}{
		{name: "comments and blanks", content: "# vault keys\n\nb:" + k2 + "\n  # old\na:" + k1 + "\n", wantIDs: []string{"b", "a"}},
		{name: "no trailing newline", content: "a:" + k1, wantIDs: []string{"a"}},
		{name: "crlf", content: "a:" + k1 + "\r\nb:" + k2 + "\r\n", wantIDs: []string{"a", "b"}},
		{name: "only comments", content: "# nothing\n\n", errHas: "no vault keys"},
		{name: "empty", content: "", errHas: "no vault keys"},
		{name: "bad line number", content: "# c\na:" + k1 + "\nb:xyz\n", errHas: `line 3 (id "b")`},
		{name: "duplicate", content: "a:" + k1 + "\na:" + k2 + "\n", errHas: `line 2: duplicate key id "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			kr, err := ReadKeyFile(path)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("got error %v, want one containing %q", err, tt.errHas)
				}
				if got := mc.ErrorCode(err); got != mc.EINVALID {
					t.Errorf("got code %q, want %q", got, mc.EINVALID)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadKeyFile: %v", err)
			}
			if got := kr.IDs(); !slices.Equal(got, tt.wantIDs) {
				t.Errorf("got ids %v, want %v", got, tt.wantIDs)
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		_, err := ReadKeyFile(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("got %v, want a not-exist error", err)
		}
	})
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := loadOrCreate(dir, []string{"k7"}); mc.ErrorReason(err) != mc.ReasonVaultKeyMissing || !strings.Contains(mc.ErrorMessage(err), "key id(s) k7") {
		t.Fatalf("got %v, want %s naming k7 when records need a key", err, mc.ReasonVaultKeyMissing)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key file was made although creating was not allowed: %v", err)
	}
	kr, created, err := loadOrCreate(dir, nil)
	if err != nil {
		t.Fatalf("loadOrCreate: %v", err)
	}
	if !created {
		t.Errorf("got created false on an empty directory, want true")
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("got key file mode %v, want %v", got, want)
	}

	again, created, err := loadOrCreate(dir, nil)
	if err != nil {
		t.Fatalf("loadOrCreate again: %v", err)
	}
	if created {
		t.Errorf("got created true with an existing key file, want false")
	}
	if got, want := again.Encode(), kr.Encode(); got != want {
		t.Errorf("second load got a different key")
	}

	// The generated key seals and the reloaded one opens.
	sealed, err := New(kr).Seal(mc.Credential{UserID: "u", Provider: "demo", Files: map[string]string{"f": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(again).Open(sealed); err != nil {
		t.Errorf("open with reloaded key: %v", err)
	}
}

// TestGeneratedKeyIDsAreNeverReused: a generated key's id is derived from
// the key, so two generated keys never share one (the old generator named
// every key "k1").
func TestGeneratedKeyIDsAreNeverReused(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		kr, err := GenerateKeyring()
		if err != nil {
			t.Fatal(err)
		}
		id := kr.Primary()
		if seen[id] || !keyIDPattern.MatchString(id) {
			t.Fatalf("generated key id %q: reused or malformed", id)
		}
		seen[id] = true
		if got := KeyID([]byte(kr.keys[0].raw.Reveal())); got != id {
			t.Errorf("id %q, want the one derived from the key, %q", id, got)
		}
	}
}

func TestLoad(t *testing.T) {
	k1 := newKeyB64(t)
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("f:"+newKeyB64(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	tests := []struct {
		name        string
		cfg         Config
		wantPrimary string
		wantCreated bool
		wantErr     bool
	}{
		{name: "env wins", cfg: Config{Keys: mc.SecretOf("e:" + k1), KeyFile: file, DataDir: data}, wantPrimary: "e"},
		{name: "file next", cfg: Config{KeyFile: file, DataDir: data}, wantPrimary: "f"},
		{name: "data dir last", cfg: Config{DataDir: data}, wantPrimary: "k-", wantCreated: true},
		{name: "bad env is an error, not a fallback", cfg: Config{Keys: mc.SecretOf("e:short"), DataDir: data}, wantErr: true},
		{name: "nothing", cfg: Config{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kr, created, err := Load(t.Context(), tt.cfg, newTestStore(t))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got keyring %v, want error", kr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := kr.Primary(); !strings.HasPrefix(got, tt.wantPrimary) {
				t.Errorf("got primary %q, want %q", got, tt.wantPrimary)
			}
			if created != tt.wantCreated {
				t.Errorf("got created %v, want %v", created, tt.wantCreated)
			}
		})
	}
}

// TestLoadRefusesMissingKeys: with sealed records in the store, a keyring
// that cannot open them is refused with the key ids the records need, and
// no key is generated over them.
func TestLoadRefusesMissingKeys(t *testing.T) {
	ka, kb := newKeyB64(t), newKeyB64(t)
	store := newTestStore(t)
	svc, _ := newService(t, store, mustKeys(t, "a:"+ka))
	if err := svc.Put(t.Context(), testCredential("alice", "demo")); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" for success
	}{
		{name: "no key, empty data dir: nothing generated", cfg: Config{DataDir: data}, wantErr: "does not exist, but the store holds records sealed with vault key id(s) a"},
		{name: "another key", cfg: Config{Keys: mc.SecretOf("b:" + kb)}, wantErr: "key id(s) a, which no configured key has"},
		{name: "another key under the same id", cfg: Config{Keys: mc.SecretOf("a:" + kb)}, wantErr: "key id(s) a, which the configured key(s) of that id do not open"},
		{name: "the key among others", cfg: Config{Keys: mc.SecretOf("b:" + kb + ",a:" + ka)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kr, _, err := Load(t.Context(), tt.cfg, store)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if mc.ErrorReason(err) != mc.ReasonVaultKeyMissing || !strings.Contains(mc.ErrorMessage(err), tt.wantErr) {
				t.Fatalf("got keyring %v, error %v; want %s mentioning %q", kr, err, mc.ReasonVaultKeyMissing, tt.wantErr)
			}
			if strings.Contains(err.Error(), ka) || strings.Contains(err.Error(), kb) {
				t.Error("the error reveals a key")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(data, KeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key was generated over sealed records: %v", err)
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	k := newKeyB64(t)
	kr := mustKeys(t, "a:"+k)
	raw, _ := base64.StdEncoding.DecodeString(k)
	v := New(kr)
	for _, s := range []string{
		fmt.Sprint(kr), fmt.Sprintf("%v %+v %#v %s", kr, kr, kr, kr),
		fmt.Sprintf("%v %+v %#v", *kr, *kr, *kr),
		fmt.Sprintf("%v %+v %#v", v, v, *v),
	} {
		if strings.Contains(s, k) || strings.Contains(s, string(raw)) {
			t.Errorf("printed keyring %q contains the key", s)
		}
	}
	if got, want := kr.String(), "vault.Keyring[a]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestKeyringWithWithout(t *testing.T) {
	a := mustKeys(t, "a:"+newKeyB64(t))
	b := mustKeys(t, "b:"+newKeyB64(t))
	ab := a.With(b)
	if got, want := ab.IDs(), []string{"b", "a"}; !slices.Equal(got, want) {
		t.Errorf("got ids %v, want %v", got, want)
	}
	onlyB, err := ab.Without("a")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := onlyB.IDs(), []string{"b"}; !slices.Equal(got, want) {
		t.Errorf("got ids %v, want %v", got, want)
	}
	if _, err := onlyB.Without("b"); mc.ErrorReason(err) != mc.ReasonNoVaultKeys {
		t.Errorf("removing the last key: got %v, want reason %q", err, mc.ReasonNoVaultKeys)
	}
	// Encode round-trips through the key-file parser.
	back, err := parseKeyFile([]byte(ab.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := back.Encode(), ab.Encode(); got != want {
		t.Errorf("Encode does not round-trip")
	}
}

func TestDerive(t *testing.T) {
	ka, kb := newKeyB64(t), newKeyB64(t)
	ab, same, ba := mustKeys(t, "a:"+ka+",b:"+kb), mustKeys(t, "a:"+ka), mustKeys(t, "b:"+kb+",a:"+ka)
	m, v := ab.Derive(PurposeMachineSecrets), ab.Derive(PurposeViewerTokens)
	if len(m.Reveal()) != KeySize || m.Reveal() == v.Reveal() {
		t.Error("derived keys are not 32 bytes, or two purposes share one")
	}
	if same.Derive(PurposeMachineSecrets).Reveal() != m.Reveal() {
		t.Error("one primary key derives different keys")
	}
	raw, _ := base64.StdEncoding.DecodeString(ka)
	if m.Reveal() == string(raw) {
		t.Error("the derived key is the vault key")
	}
	all := ba.DeriveAll(PurposeViewerTokens)
	if len(all) != 2 || all[0].Reveal() == v.Reveal() || all[1].Reveal() != v.Reveal() {
		t.Error("DeriveAll: want the new primary's key first and the earlier primary's after")
	}
}
