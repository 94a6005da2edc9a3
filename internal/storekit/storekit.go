package storekit

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/master-controller/mc"
)

// EncodeCursor returns the cursor that follows the session created at
// created with id: the opaque, unpadded base64url encoding of
// "<created_at in Unix microseconds>.<session id>".
func EncodeCursor(created time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(created.UnixMicro(), 10) + "." + id))
}

// DecodeCursor returns the creation time (UTC) and session id in cursor c.
// Only the exact encoding EncodeCursor makes is accepted; anything else is
// an mc.EINVALID error with reason "bad_cursor".
func DecodeCursor(c string) (time.Time, string, error) {
	bad := mc.Errorf(mc.EINVALID, mc.ReasonBadCursor, "The cursor is not valid.")
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	micros, id, ok := strings.Cut(string(b), ".")
	if !ok || !mc.ValidID(id) {
		return time.Time{}, "", bad
	}
	n, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, "", bad
	}
	t := time.UnixMicro(n).UTC()
	if EncodeCursor(t, id) != c {
		return time.Time{}, "", bad
	}
	return t, id, nil
}

// UTC returns t as every time is stored: UTC, microsecond precision
// (PostgreSQL's timestamptz), so that a value read back equals the value
// written. The zero time stays zero.
func UTC(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// PageSize applies the documented limits of a list's Limit: negative is an
// error, 0 means 50, and more than 500 means 500.
func PageSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, mc.Errorf(mc.EINVALID, mc.ReasonBadLimit, "The limit must not be negative.")
	case n == 0:
		return 50, nil
	case n > 500:
		return 500, nil
	}
	return n, nil
}

// CheckSession validates a session for CreateSession.
func CheckSession(s *mc.Session) error {
	switch {
	case s == nil:
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "The session is missing.")
	case !mc.ValidID(s.ID):
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "The session id is not valid.")
	case s.UserID == "":
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "The session has no user id.")
	case s.Provider == "":
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "The session has no provider.")
	case s.CreatedAt.IsZero():
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "The session has no creation time.")
	case s.ExpiresAt.IsZero():
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "The session has no expiry time.")
	}
	return nil
}

// CheckTransition validates t against the state machine.
func CheckTransition(t mc.Transition) error {
	if !mc.CanTransition(t.From, t.To) {
		return &mc.Error{Code: mc.EINVALID, Reason: mc.ReasonBadTransition, SessionID: t.ID,
			Message: "The session cannot move from " + string(t.From) + " to " + string(t.To) + "."}
	}
	return nil
}

// NotFound is the error for a session id that does not exist.
func NotFound(id string) error {
	return &mc.Error{Code: mc.ENOTFOUND, Reason: mc.ReasonSessionNotFound, SessionID: id, Message: "No such session."}
}

// Stale is the error for a change based on a session that has changed since
// it was read.
func Stale(id string) error {
	return &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonStale, SessionID: id,
		Message: "The session changed; read it again."}
}
