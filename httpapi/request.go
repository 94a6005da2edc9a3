package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/jsonkey"
)

// decode reads r's body as exactly one JSON object into v. Every way a body
// can be wrong is EINVALID (400), never a 500:
// bad_content_type (a Content-Type other than JSON; none is fine),
// body_too_large (over Config.MaxBodyBytes), bad_json (malformed, empty, or
// wrong types), unknown_field, trailing_data.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return mc.Errorf(mc.EINVALID, "bad_content_type",
				"the body must be JSON (Content-Type: application/json)")
		}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return bodyError(err, s.cfg.MaxBodyBytes)
	}
	// encoding/json keeps the last of two equal keys and matches keys to
	// fields regardless of case: {"user_id":"a","USER_ID":"b"} would mean
	// "b" here and maybe "a" to whatever checked the body before.
	if k, dup := jsonkey.Duplicate(b); dup {
		return mc.Errorf(mc.EINVALID, ReasonDuplicateKey, "the body holds key %q more than once (keys are matched regardless of case)", truncate(k, 64))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err, s.cfg.MaxBodyBytes)
	}
	// Only the end of the body may follow (white space aside).
	if _, err := dec.Token(); errors.Is(err, io.EOF) {
		return nil
	}
	return mc.Errorf(mc.EINVALID, "trailing_data", "the body must hold one JSON object and nothing after it")
}

// bodyError classifies a JSON decoding error.
func bodyError(err error, limit int64) error {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case isTimeout(err):
		return &mc.Error{Code: mc.EINVALID, Reason: ReasonBodyTimeout, Err: err,
			Message: "the request body did not arrive in time"}
	case errors.As(err, &tooLarge):
		return &mc.Error{Code: mc.EINVALID, Reason: "body_too_large", Err: err,
			Message: fmt.Sprintf("the body is larger than %d bytes", limit)}
	case errors.Is(err, io.EOF):
		return mc.Errorf(mc.EINVALID, "bad_json", "the body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &mc.Error{Code: mc.EINVALID, Reason: "bad_json", Err: err, Message: "the body is truncated JSON"}
	case errors.As(err, &syntax):
		return &mc.Error{Code: mc.EINVALID, Reason: "bad_json", Err: err,
			Message: fmt.Sprintf("the body is not valid JSON (at byte %d)", syntax.Offset)}
	case errors.As(err, &typ):
		msg := "the body must be a JSON object"
		if typ.Field != "" {
			msg = fmt.Sprintf("field %q must be a JSON %s", typ.Field, jsonKind(typ.Type.Kind()))
		}
		return &mc.Error{Code: mc.EINVALID, Reason: "bad_json", Err: err, Message: msg}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no type for this error; its text is stable.
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return &mc.Error{Code: mc.EINVALID, Reason: "unknown_field", Err: err,
			Message: "unknown field " + truncate(field, 64)}
	}
	return &mc.Error{Code: mc.EINVALID, Reason: "bad_json", Err: err, Message: "the body could not be read as JSON"}
}

// jsonKind names the JSON type that a Go kind decodes from.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "string"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9._@:-]{1,128}$`)

// checkUserID refuses a missing or malformed user id (bad_user_id).
func checkUserID(id string) error {
	switch {
	case id == "":
		return mc.Errorf(mc.EINVALID, "bad_user_id", "user_id is required")
	case !userIDPattern.MatchString(id):
		return mc.Errorf(mc.EINVALID, "bad_user_id",
			"user_id must be 1 to 128 characters of A-Z a-z 0-9 . _ @ : -")
	}
	return nil
}

// checkProvider refuses a provider the registry does not know
// (unknown_provider).
func (s *Server) checkProvider(name string) error {
	if name == "" {
		return mc.Errorf(mc.EINVALID, "unknown_provider", "provider is required")
	}
	p, ok := s.deps.Providers.Get(name)
	if !ok {
		return mc.Errorf(mc.EINVALID, "unknown_provider", "unknown provider %q", truncate(name, 64))
	}
	if s.deps.ProviderCheck != nil {
		if err := s.deps.ProviderCheck(p); err != nil {
			e := mc.Errorf(mc.EUNAVAILABLE, mc.ReasonProviderUnavailable, "provider %q cannot run here: %v", name, err)
			e.Err = err
			return e
		}
	}
	return nil
}

// pathID returns the {id} path value, refusing anything that is not an id
// (bad_id, 400) before any look-up, so that the reply reveals nothing.
func pathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !mc.ValidID(id) {
		return "", mc.Errorf(mc.EINVALID, "bad_id", "the session id is not valid")
	}
	reqState(r.Context()).sessionID = id
	return id, nil
}

// checkQuery refuses a query string that cannot be decoded (bad_query),
// which r.URL.Query() would silently drop a part of.
func checkQuery(r *http.Request) error {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return mc.Errorf(mc.EINVALID, ReasonBadQuery, "the query string cannot be decoded (%s)", queryProblem(err))
	}
	return nil
}

// queryProblem says what is wrong with a query without quoting it (it may
// hold a token).
func queryProblem(err error) string {
	var esc url.EscapeError
	switch {
	case errors.As(err, &esc):
		return "a bad %-escape"
	case strings.Contains(err.Error(), "semicolon"):
		return "a semicolon; separate parameters with &"
	}
	return "not name=value&…"
}

// queryLimit parses the limit parameter: absent is 0 (the store's default),
// else an integer in [1, 500] (bad_limit).
func queryLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 500 {
		return 0, mc.Errorf(mc.EINVALID, "bad_limit", "limit must be an integer from 1 to 500")
	}
	return n, nil
}
