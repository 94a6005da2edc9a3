package mc

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies an error for its client. The HTTP API maps each code to one
// status in one table.
type Code string

// The error codes.
const (
	EINVALID      Code = "invalid"
	EUNAUTHORIZED Code = "unauthorized"
	EFORBIDDEN    Code = "forbidden"
	ENOTFOUND     Code = "not_found"
	ECONFLICT     Code = "conflict"
	EUNAVAILABLE  Code = "unavailable"
	EINTERNAL     Code = "internal"
)

// Error is the domain error. Message is safe to show a client; Err is the
// cause, for the log only.
type Error struct {
	Code Code
	// Reason is a finer machine-readable code (for example "unknown_provider"),
	// the one that goes into logs and metrics.
	Reason Reason
	// Message is a short sentence for the client.
	Message string
	// SessionID names a related session (for a conflict: the existing one).
	SessionID string
	// RetryAfter tells a client when to try again (for unavailable).
	RetryAfter time.Duration
	// Err is the underlying cause, never shown to a client.
	Err error
}

// Errorf returns an *Error with code, reason and a formatted client message.
func Errorf(code Code, reason Reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Error implements error. It includes the cause, so it is for logs, not clients.
func (e *Error) Error() string {
	s := string(e.Code)
	if e.Reason != "" {
		s += " (" + string(e.Reason) + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	}
	return EINTERNAL
}

// ErrorReason returns the reason of the first *Error in err's chain, or
// "internal" for any other non-nil error.
func ErrorReason(err error) Reason {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e) && e.Reason != "":
		return e.Reason
	case errors.As(err, &e):
		return Reason(e.Code)
	}
	return ReasonInternal
}

// ErrorMessage returns the client-safe message of err: an *Error's Message, or
// a generic sentence for anything else, so an internal cause never leaks.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL && e.Message != "" {
		return e.Message
	}
	return "internal error"
}
