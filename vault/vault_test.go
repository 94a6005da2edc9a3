package vault

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
)

const demoSecret = "demo-s3cr3t-value-that-must-not-leak"

func testCredential(user, provider string) mc.Credential {
	return mc.Credential{
		UserID:     user,
		Provider:   provider,
		SessionID:  mc.NewID(),
		CapturedAt: time.Date(2026, 11, 27, 8, 30, 0, 0, time.UTC),
		Files: map[string]string{
			"~/.demo/credentials.json": `{"access_token":"` + demoSecret + `","token_type":"Bearer"}`,
		},
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	v := New(mustKeys(t, "a:"+newKeyB64(t)))
	in := testCredential("user-1", "demo")
	in.Files["~/.other"] = "" // empty content survives
	sealed, err := v.Seal(in)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if got, want := sealed.KeyID, "a"; got != want {
		t.Errorf("got key id %q, want %q", got, want)
	}
	if got := len(sealed.Nonce); got != NonceSize {
		t.Errorf("got nonce of %d bytes, want %d", got, NonceSize)
	}
	if bytes.Contains(sealed.Ciphertext, []byte(demoSecret)) {
		t.Errorf("ciphertext contains the plaintext")
	}
	if sealed.UserID != in.UserID || sealed.Provider != in.Provider || sealed.SessionID != in.SessionID || !sealed.CapturedAt.Equal(in.CapturedAt) {
		t.Errorf("got sealed metadata %+v, want that of %+v", sealed, in)
	}
	out, err := v.Open(sealed)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if out.UserID != in.UserID || out.Provider != in.Provider || out.SessionID != in.SessionID || !out.CapturedAt.Equal(in.CapturedAt) {
		t.Errorf("got opened %+v, want %+v", out, in)
	}
	if !maps.Equal(out.Files, in.Files) {
		t.Errorf("got files %v, want %v", out.Files, in.Files)
	}

	// A second seal of the same credential uses a new nonce.
	again, err := v.Seal(in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again.Nonce, sealed.Nonce) || bytes.Equal(again.Ciphertext, sealed.Ciphertext) {
		t.Errorf("two seals share a nonce or ciphertext")
	}
}

func TestSealInvalid(t *testing.T) {
	v := New(mustKeys(t, "a:"+newKeyB64(t)))
	tests := []struct {
		name string
		c    mc.Credential
	}{
		{"no user", mc.Credential{Provider: "demo", Files: map[string]string{"f": "x"}}},
		{"no provider", mc.Credential{UserID: "u", Files: map[string]string{"f": "x"}}},
		{"no files", mc.Credential{UserID: "u", Provider: "demo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Seal(tt.c)
			if got := mc.ErrorCode(err); got != mc.EINVALID {
				t.Errorf("got %v, want code %q", err, mc.EINVALID)
			}
		})
	}
}

func TestOpenFailures(t *testing.T) {
	keyA := newKeyB64(t)
	v := New(mustKeys(t, "a:"+keyA))
	sealed, err := v.Seal(testCredential("alice", "demo"))
	if err != nil {
		t.Fatal(err)
	}
	// "ab"+"c" and "a"+"bc" concatenate alike; the encoding must tell them apart.
	ambiguous, err := v.Seal(testCredential("ab", "c"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		vault  *Vault
		mutate func(s *mc.SealedCredential) mc.SealedCredential
		cause  error
	}{
		{name: "wrong key under the same id", vault: New(mustKeys(t, "a:"+newKeyB64(t))), cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { return *s }},
		{name: "unknown key id", vault: New(mustKeys(t, "b:"+newKeyB64(t))), cause: ErrUnknownKey,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { return *s }},
		{name: "key id changed", vault: New(mustKeys(t, "a:"+keyA+",b:"+newKeyB64(t))), cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.KeyID = "b"; return *s }},
		{name: "record moved to another user", cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.UserID = "bob"; return *s }},
		{name: "record moved to another provider", cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.Provider = "codex"; return *s }},
		{name: "user/provider boundary shifted", cause: ErrAuthentication,
			mutate: func(*mc.SealedCredential) mc.SealedCredential {
				s := ambiguous
				s.UserID, s.Provider = "a", "bc"
				return s
			}},
		{name: "ciphertext missing its last byte", cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential {
				s.Ciphertext = s.Ciphertext[:len(s.Ciphertext)-1]
				return *s
			}},
		{name: "ciphertext shorter than the tag", cause: ErrTruncated,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.Ciphertext = s.Ciphertext[:15]; return *s }},
		{name: "ciphertext empty", cause: ErrTruncated,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.Ciphertext = nil; return *s }},
		{name: "nonce truncated", cause: ErrTruncated,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.Nonce = s.Nonce[:11]; return *s }},
		{name: "nonce changed", cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.Nonce[0] ^= 1; return *s }},
		{name: "ciphertext bit flipped", cause: ErrAuthentication,
			mutate: func(s *mc.SealedCredential) mc.SealedCredential { s.Ciphertext[3] ^= 0x80; return *s }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sealed
			s.Nonce = bytes.Clone(sealed.Nonce)
			s.Ciphertext = bytes.Clone(sealed.Ciphertext)
			s = tt.mutate(&s)
			vault := tt.vault
			if vault == nil {
				vault = v
			}
			got, err := vault.Open(s)
			if err == nil {
				t.Fatalf("got %+v, want an error", got)
			}
			if got.Files != nil || got.UserID != "" {
				t.Errorf("got partial credential %+v with the error", got)
			}
			var e *mc.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %T %v, want *mc.Error", err, err)
			}
			if e.Code != mc.EINTERNAL || e.Reason != mc.ReasonVaultOpenFailed {
				t.Errorf("got code %q reason %q, want %q %q", e.Code, e.Reason, mc.EINTERNAL, mc.ReasonVaultOpenFailed)
			}
			if !errors.Is(err, tt.cause) {
				t.Errorf("got %v, want cause %v", err, tt.cause)
			}
			if strings.Contains(err.Error(), demoSecret) || strings.Contains(err.Error(), keyA) {
				t.Errorf("error %q contains a secret", err)
			}
			if got, want := mc.ErrorMessage(err), "internal error"; got != want {
				t.Errorf("got client message %q, want %q", got, want)
			}
		})
	}

	// The untouched record still opens: the table did not mutate it.
	if _, err := v.Open(sealed); err != nil {
		t.Errorf("open the original: %v", err)
	}
}

func TestAssociatedDataIsCanonical(t *testing.T) {
	pairs := [][2]string{{"ab", "c"}, {"a", "bc"}, {"abc", ""}, {"", "abc"}, {"a\x00", "b"}, {"a", "\x00b"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		ad := string(AssociatedData(p[0], p[1]))
		if prev, ok := seen[ad]; ok {
			t.Errorf("pairs %q and %q have the same associated data", prev, p)
		}
		seen[ad] = p
	}
}
