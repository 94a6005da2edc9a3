// Package mc holds the domain of master-controller: sessions and their state
// machine, machines and the drivers that run them, the store, credentials,
// secrets and error codes. It imports nothing of the module; every adapter
// (stores, drivers, the gateway, the HTTP API) imports it and never another
// adapter. Only cmd/ and app/ wire them together.
package mc

import (
	"crypto/rand"
	"encoding/base64"
	"regexp"
)

// Log attribute keys, used by every package so that a log query for one key
// finds every line about a session or machine.
const (
	LogSessionID = "session_id"
	LogMachineID = "machine_id"
	LogRequestID = "request_id"
	LogReason    = "reason"
	LogUserID    = "user_id"
	LogProvider  = "provider"
	LogReplica   = "replica"
	// LogFromReplica and LogToReplica name the replicas a session was
	// adopted from and by.
	LogFromReplica = "from_replica"
	LogToReplica   = "to_replica"
	LogError       = "error" // an error's text: this key, never "err"
)

// NewID returns a random, unguessable, URL-safe identifier of 128 bits
// (22 characters of unpadded base64url).
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand: " + err.Error()) // never happens on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// ValidID reports whether s has the shape of an id made by NewID. Ids that are
// not ids are refused before any look-up.
func ValidID(s string) bool { return idPattern.MatchString(s) }
