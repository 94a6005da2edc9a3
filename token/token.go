// Package token issues and verifies viewer tokens: HMAC-SHA256 signed, bound
// to one session id, with an expiry. The format is
// "v1.<base64url payload>.<base64url mac>", where the payload is the JSON
// {"sid":"<session id>","exp":<unix seconds>} and the MAC covers
// "v1.<base64url payload>". Every replica derives the signing key from the
// vault keys of its configuration (it is never in the store), so any replica
// verifies any replica's token.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/master-controller/mc"
)

// DefaultTTL is the lifetime of a viewer token unless the caller asks otherwise.
const DefaultTTL = 10 * time.Minute

// maxLen bounds the tokens Verify looks at; ours are about 120 bytes.
const maxLen = 1024

// The reasons of Verify's errors (log and metric labels), under the names
// the gateway knows them by; they are mc.ReasonToken….
const (
	ReasonMissing      = mc.ReasonTokenMissing
	ReasonMalformed    = mc.ReasonTokenMalformed
	ReasonBadSignature = mc.ReasonTokenBadSignature
	ReasonExpired      = mc.ReasonTokenExpired
	ReasonWrongSession = mc.ReasonTokenWrongSession
)

// The errors of Verify; compare with errors.Is. The first four are
// EUNAUTHORIZED (the WebSocket closes with 4401), ErrWrongSession is
// EFORBIDDEN (4403).
var (
	ErrMissing      = &mc.Error{Code: mc.EUNAUTHORIZED, Reason: mc.ReasonTokenMissing, Message: "viewer token missing"}
	ErrMalformed    = &mc.Error{Code: mc.EUNAUTHORIZED, Reason: mc.ReasonTokenMalformed, Message: "viewer token malformed"}
	ErrBadSignature = &mc.Error{Code: mc.EUNAUTHORIZED, Reason: mc.ReasonTokenBadSignature, Message: "viewer token invalid"}
	ErrExpired      = &mc.Error{Code: mc.EUNAUTHORIZED, Reason: mc.ReasonTokenExpired, Message: "viewer token expired"}
	ErrWrongSession = &mc.Error{Code: mc.EFORBIDDEN, Reason: mc.ReasonTokenWrongSession, Message: "viewer token is not for this session"}
)

const prefix = "v1."

// Signer issues tokens with one key and verifies them with that key and any
// earlier ones.
type Signer struct {
	key   []byte
	older [][]byte
	clock mc.Clock
}

// NewSigner returns a Signer that issues with key and also accepts tokens
// issued with the older keys (a replica whose vault keys have another
// primary). clock may be nil for the system clock.
func NewSigner(key mc.Secret, clock mc.Clock, older ...mc.Secret) *Signer {
	if clock == nil {
		clock = mc.SystemClock{}
	}
	s := &Signer{key: []byte(key.Reveal()), clock: clock}
	for _, k := range older {
		s.older = append(s.older, []byte(k.Reveal()))
	}
	return s
}

type payload struct {
	SID string `json:"sid"`
	Exp int64  `json:"exp"`
}

// Issue returns a token for sessionID that expires after ttl (DefaultTTL when
// ttl <= 0), and its expiry. Expiry has a resolution of one second.
func (s *Signer) Issue(sessionID string, ttl time.Duration) (string, time.Time) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	exp := s.clock.Now().Add(ttl).Truncate(time.Second)
	p, err := json.Marshal(payload{SID: sessionID, Exp: exp.Unix()})
	if err != nil {
		panic("marshal token payload: " + err.Error()) // a string and an int
	}
	signed := prefix + base64.RawURLEncoding.EncodeToString(p)
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac(s.key, signed)), exp
}

func mac(key []byte, signed string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// signedByUs reports whether sum is the MAC of signed under the key or one
// of the older keys.
func (s *Signer) signedByUs(sum []byte, signed string) bool {
	ok := hmac.Equal(sum, mac(s.key, signed))
	for _, k := range s.older {
		ok = hmac.Equal(sum, mac(k, signed)) || ok // every key is tried: no timing hint of which one
	}
	return ok
}

// Verify checks that tok is a token this Signer issued for sessionID and that
// it has not expired at now. Errors (never wrapped, compare with errors.Is):
// ErrMissing, ErrMalformed, ErrBadSignature, ErrExpired, ErrWrongSession. The
// signature is checked before the payload is trusted, so a forged payload is
// always ErrBadSignature.
func (s *Signer) Verify(tok, sessionID string, now time.Time) error {
	if tok == "" {
		return ErrMissing
	}
	if len(tok) > maxLen || !strings.HasPrefix(tok, prefix) {
		return ErrMalformed
	}
	dot := strings.LastIndexByte(tok, '.')
	if dot < len(prefix) {
		return ErrMalformed
	}
	signed, macPart := tok[:dot], tok[dot+1:]
	if strings.IndexByte(signed[len(prefix):], '.') >= 0 {
		return ErrMalformed
	}
	sum, err := base64.RawURLEncoding.Strict().DecodeString(macPart)
	if err != nil || len(sum) != sha256.Size {
		return ErrMalformed
	}
	if !s.signedByUs(sum, signed) {
		return ErrBadSignature
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(signed[len(prefix):])
	if err != nil {
		return ErrMalformed
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err != nil || p.SID == "" {
		return ErrMalformed
	}
	if !now.Before(time.Unix(p.Exp, 0)) {
		return ErrExpired
	}
	if subtle.ConstantTimeCompare([]byte(p.SID), []byte(sessionID)) != 1 {
		return ErrWrongSession
	}
	return nil
}
