package token

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func TestVerify(t *testing.T) {
	key := mc.NewSecret(32)
	s := NewSigner(key, testutil.NewClock(t0))
	sid := mc.NewID()
	tok, exp := s.Issue(sid, 0)
	if got, want := exp, t0.Add(DefaultTTL); !got.Equal(want) {
		t.Errorf("got expiry %v, want %v", got, want)
	}
	other := NewSigner(mc.NewSecret(32), testutil.NewClock(t0))
	forgedTok, _ := other.Issue(sid, time.Hour)

	// A payload for another session with the original MAC.
	parts := strings.Split(tok, ".")
	swapped := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sid":"`+mc.NewID()+`","exp":99999999999}`)) + "." + parts[2]

	tests := []struct {
		name string
		tok  string
		sid  string
		now  time.Time
		want error
	}{
		{"ok", tok, sid, t0, nil},
		{"ok just before expiry", tok, sid, exp.Add(-time.Nanosecond), nil},
		{"missing", "", sid, t0, ErrMissing},
		{"garbage", "hello", sid, t0, ErrMalformed},
		{"wrong version", "v2" + tok[2:], sid, t0, ErrMalformed},
		{"extra part", tok + ".x", sid, t0, ErrMalformed},
		{"truncated mac", tok[:len(tok)-2], sid, t0, ErrMalformed},
		{"forged signature", forgedTok, sid, t0, ErrBadSignature},
		{"swapped payload", swapped, sid, t0, ErrBadSignature},
		{"expired", tok, sid, exp, ErrExpired},
		{"wrong session", tok, mc.NewID(), t0, ErrWrongSession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Verify(tt.tok, tt.sid, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestErrorsAreDomainErrors(t *testing.T) {
	for _, err := range []error{ErrMissing, ErrMalformed, ErrBadSignature, ErrExpired} {
		if got := mc.ErrorCode(err); got != mc.EUNAUTHORIZED {
			t.Errorf("%v: got code %s, want %s", err, got, mc.EUNAUTHORIZED)
		}
	}
	if got := mc.ErrorCode(ErrWrongSession); got != mc.EFORBIDDEN {
		t.Errorf("got code %s, want %s", got, mc.EFORBIDDEN)
	}
}

// FuzzVerify checks that Verify never panics and never accepts a token that
// the Signer did not issue.
func FuzzVerify(f *testing.F) {
	key := mc.SecretOf("fuzz-key-0123456789abcdef0123456789")
	s := NewSigner(key, testutil.NewClock(t0))
	sid := "AAAAAAAAAAAAAAAAAAAAAA"
	tok, _ := s.Issue(sid, time.Hour)
	issued := map[string]bool{tok: true}
	f.Add(tok, sid)
	f.Add("v1..", sid)
	f.Add("v1.e30.AAAA", sid)
	f.Add(tok[:len(tok)-1]+"A", sid)
	f.Add("v1."+base64.RawURLEncoding.EncodeToString([]byte(`{"sid":"x","exp":1}`))+".", "x")
	f.Fuzz(func(t *testing.T, tok, sessionID string) {
		err := s.Verify(tok, sessionID, t0)
		if err == nil && !issued[tok] {
			t.Fatalf("accepted a token it did not issue: %q", tok)
		}
		if err != nil && mc.ErrorCode(err) != mc.EUNAUTHORIZED && mc.ErrorCode(err) != mc.EFORBIDDEN {
			t.Fatalf("got error %v with code %s", err, mc.ErrorCode(err))
		}
	})
}

// TestOlderKeys: a replica whose primary vault key changed still accepts the
// tokens issued under the earlier one, and only those.
func TestOlderKeys(t *testing.T) {
	oldKey, newKey := mc.NewSecret(32), mc.NewSecret(32)
	sid := mc.NewID()
	oldTok, _ := NewSigner(oldKey, testutil.NewClock(t0)).Issue(sid, time.Minute)
	rotated := NewSigner(newKey, testutil.NewClock(t0), oldKey)
	newTok, _ := rotated.Issue(sid, time.Minute)
	for name, tok := range map[string]string{"old": oldTok, "new": newTok} {
		if err := rotated.Verify(tok, sid, t0); err != nil {
			t.Errorf("%s token: %v", name, err)
		}
	}
	if err := NewSigner(newKey, testutil.NewClock(t0)).Verify(oldTok, sid, t0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("old token without the old key: %v, want ErrBadSignature", err)
	}
	if err := NewSigner(oldKey, testutil.NewClock(t0)).Verify(newTok, sid, t0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("new token under the old key alone: %v, want ErrBadSignature", err)
	}
}
