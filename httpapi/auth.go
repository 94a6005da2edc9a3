package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/master-controller/mc"
)

// KeyHash is the SHA-256 hash of an API key: all the API holds of a key.
type KeyHash [sha256.Size]byte

// HashAPIKey returns the hash of key (surrounding spaces removed), for
// Config.APIKeys. The caller drops the key itself after hashing it.
func HashAPIKey(key string) KeyHash {
	return sha256.Sum256([]byte(strings.TrimSpace(key)))
}

// ParseKeyHash parses a hash written as 64 hex digits (for a keys file that
// holds hashes rather than keys).
func ParseKeyHash(s string) (KeyHash, error) {
	var h KeyHash
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("parse api key hash: want 64 hex digits")
	}
	copy(h[:], b)
	return h, nil
}

// ID names the key in audit entries and logs: "key:" and the first 8 hex
// digits of its hash. It does not reveal the key.
func (h KeyHash) ID() string { return "key:" + hex.EncodeToString(h[:4]) }

// String returns the key's ID, so a KeyHash never prints in full by accident.
func (h KeyHash) String() string { return h.ID() }

// authenticate checks the request's "Authorization: Bearer <key>" against the
// configured hashes in constant time (every hash is compared, whether or not
// an earlier one matched) and returns the key's id.
// Errors: EUNAUTHORIZED (missing_api_key, bad_api_key).
func (s *Server) authenticate(r *http.Request) (string, error) {
	scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	key = strings.TrimSpace(key)
	if !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", mc.Errorf(mc.EUNAUTHORIZED, mc.ReasonMissingAPIKey,
			"an API key is required: Authorization: Bearer <key>")
	}
	sum := sha256.Sum256([]byte(key))
	match := -1
	for i := range s.keys {
		if subtle.ConstantTimeCompare(sum[:], s.keys[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", mc.Errorf(mc.EUNAUTHORIZED, mc.ReasonBadAPIKey, "the API key is not valid")
	}
	return s.keys[match].ID(), nil
}
