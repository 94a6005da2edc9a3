package httpapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/master-controller/mc"
)

// statuses is the one table from error codes to HTTP statuses. A code that is
// not in it (and any error that is not an *mc.Error) is 500.
var statuses = map[mc.Code]int{
	mc.EINVALID:      http.StatusBadRequest,
	mc.EUNAUTHORIZED: http.StatusUnauthorized,
	mc.EFORBIDDEN:    http.StatusForbidden,
	mc.ENOTFOUND:     http.StatusNotFound,
	mc.ECONFLICT:     http.StatusConflict,
	mc.EUNAVAILABLE:  http.StatusServiceUnavailable,
	mc.EINTERNAL:     http.StatusInternalServerError,
}

// Reasons of the API's own refusals.
const (
	// ReasonNoRoute: no route has this path (404 not_found).
	ReasonNoRoute mc.Reason = mc.ReasonNoRoute
	// ReasonRedirect: the path is not clean; the answer is a redirect to the
	// clean one (307, which keeps the method), with Location and a
	// not_found body.
	ReasonRedirect mc.Reason = mc.ReasonRedirect
	// ReasonBadQuery: the query string cannot be decoded (400 invalid).
	ReasonBadQuery mc.Reason = mc.ReasonBadQuery
	// ReasonDuplicateKey: a JSON body holds a key twice, or two keys that
	// differ only in case (400 invalid).
	ReasonDuplicateKey mc.Reason = mc.ReasonDuplicateKey
)

// Reasons whose HTTP status is not their code's.
const (
	// ReasonMethodNotAllowed: the route exists, not with this method (405,
	// with Allow).
	ReasonMethodNotAllowed mc.Reason = mc.ReasonMethodNotAllowed
	// ReasonUpgradeRequired: a plain request on a WebSocket route (426,
	// with Upgrade: websocket).
	ReasonUpgradeRequired mc.Reason = mc.ReasonUpgradeRequired
)

// reasonStatuses overrides statuses for reasons that HTTP has a status of
// its own for; their code stays invalid.
var reasonStatuses = map[mc.Reason]int{
	ReasonMethodNotAllowed: http.StatusMethodNotAllowed,
	ReasonUpgradeRequired:  http.StatusUpgradeRequired,
}

// ErrorBody is the JSON body of every error response:
// {"error":{"code":…,"message":…[,"reason":…][,"session_id":…]}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of an error response.
type ErrorDetail struct {
	// Code is one of the mc error codes ("invalid", "not_found", …).
	Code mc.Code `json:"code"`
	// Message is a sentence for a person; an internal error's cause is never
	// in it.
	Message string `json:"message"`
	// Reason is the finer machine-readable code (absent for internal errors).
	Reason mc.Reason `json:"reason,omitempty"`
	// SessionID names the related session (the existing one, for a conflict).
	SessionID string `json:"session_id,omitempty"`
}

// errorDetail builds the client's view of err: the code, the client-safe
// message, and for anything but an internal error the reason and session id.
func errorDetail(err error) ErrorDetail {
	d := ErrorDetail{Code: mc.ErrorCode(err), Message: mc.ErrorMessage(err)}
	if _, ok := statuses[d.Code]; !ok {
		d.Code = mc.EINTERNAL
	}
	var e *mc.Error
	if d.Code != mc.EINTERNAL && errors.As(err, &e) {
		d.Reason = e.Reason
		d.SessionID = e.SessionID
	}
	return d
}

// fail writes err as the response and records it for the access log line,
// which then carries its reason code (and, for the log only, its cause).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	st := reqState(r.Context())
	st.err = err
	var e *mc.Error
	if errors.As(err, &e) && e.SessionID != "" && st.sessionID == "" {
		st.sessionID = e.SessionID
	}
	writeError(w, err)
}

// writeError writes err's status, headers and JSON body.
func writeError(w http.ResponseWriter, err error) {
	d := errorDetail(err)
	switch d.Code {
	case mc.EUNAUTHORIZED:
		w.Header().Set("WWW-Authenticate", `Bearer realm="master-controller"`)
	case mc.EUNAVAILABLE:
		var e *mc.Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			secs := int64(math.Ceil(e.RetryAfter.Seconds()))
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
	}
	status := statuses[d.Code]
	if st, ok := reasonStatuses[d.Reason]; ok {
		status = st
	}
	writeJSON(w, status, ErrorBody{Error: d})
}

// writeJSON writes v as the JSON response with the given status. API
// responses may hold tokens and credentials, so they are never cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := jsonBody(v)
	if err != nil {
		// Only a programming error gets here: every response type marshals.
		status = http.StatusInternalServerError
		b, _ = jsonBody(ErrorBody{Error: ErrorDetail{Code: mc.EINTERNAL, Message: "internal error"}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// jsonBody is v as a response body: JSON and a newline.
func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// foreignErrors makes the error answers of a handler that is not the API's
// own (the pages, the gateway before its upgrade) JSON like the API's: a
// status of 400 or more written without a JSON Content-Type is answered
// with the API's error body for that status, and what the handler writes
// after it is dropped. Hijack and Flush pass through (Unwrap).
func (s *Server) foreignErrors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&foreignWriter{ResponseWriter: w, r: r}, r)
	})
}

type foreignWriter struct {
	http.ResponseWriter
	r        *http.Request
	replaced bool // the handler's error body is dropped
	wrote    bool
}

func (w *foreignWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	if code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wrote = true
	ct := w.Header().Get("Content-Type")
	if code < 400 || strings.HasPrefix(ct, "application/json") {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.replaced = true
	err := statusError(code)
	reqState(w.r.Context()).err = err
	d := errorDetail(err)
	w.Header().Del("Content-Length")
	w.Header().Del("X-Content-Type-Options")
	writeJSON(w.ResponseWriter, code, ErrorBody{Error: d})
}

func (w *foreignWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *foreignWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusError is the API's error for an HTTP status that another handler
// chose: the code of the table whose status it is, and a reason named after
// the status.
func statusError(status int) *mc.Error {
	code := mc.EINVALID
	for c, st := range statuses {
		if st == status {
			code = c
		}
	}
	if status >= 500 && status != http.StatusServiceUnavailable {
		code = mc.EINTERNAL
	}
	reason := mc.Reason(strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_"))
	for rs, st := range reasonStatuses {
		if st == status {
			reason = rs
		}
	}
	if status == http.StatusNotFound {
		reason = ReasonNoRoute
	}
	msg := http.StatusText(status)
	if msg == "" {
		msg = "error " + strconv.Itoa(status)
	}
	return &mc.Error{Code: code, Reason: reason, Message: msg}
}
