package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
)

// decodeError returns the error body of a response.
func decodeError(tb testing.TB, b []byte) httpapi.ErrorDetail {
	tb.Helper()
	var body httpapi.ErrorBody
	if err := json.Unmarshal(b, &body); err != nil {
		tb.Fatalf("error body %q: %v", b, err)
	}
	return body.Error
}

func decode[T any](tb testing.TB, b []byte) T {
	tb.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("body %q: %v", b, err)
	}
	return v
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *httpapi.Config) { c.MaxBodyBytes = 64 << 10 }})
	live := e.newSession(t, "alice", "demo")
	ended := e.newSession(t, "bob", "demo")
	e.store.setState(ended.ID, mc.StateFailed)
	big := `{"user_id":"u","provider":"demo","x":"` + strings.Repeat("a", 64<<10) + `"}`
	bigValid := `{"user_id":"u","provider":"demo"}` + strings.Repeat(" ", 64<<10)
	ct := func(v string) []string { return []string{"Content-Type", v} }

	tests := []struct {
		name         string
		method, path string
		body         string
		hdr          []string
		wantStatus   int
		wantCode     mc.Code
		wantReason   mc.Reason
	}{
		{"malformed json", "POST", "/api/v1/sessions", `{"user_id":`, nil, 400, mc.EINVALID, "bad_json"},
		{"not json", "POST", "/api/v1/sessions", `user_id=alice`, nil, 400, mc.EINVALID, "bad_json"},
		{"empty body", "POST", "/api/v1/sessions", ``, nil, 400, mc.EINVALID, "bad_json"},
		{"array body", "POST", "/api/v1/sessions", `[]`, nil, 400, mc.EINVALID, "bad_json"},
		{"wrong type", "POST", "/api/v1/sessions", `{"user_id":5,"provider":"demo"}`, nil, 400, mc.EINVALID, "bad_json"},
		{"unknown field", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"demo","admin":true}`, nil, 400, mc.EINVALID, "unknown_field"},
		{"trailing object", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"demo"}{}`, nil, 400, mc.EINVALID, "trailing_data"},
		{"trailing garbage", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"demo"} x`, nil, 400, mc.EINVALID, "trailing_data"},
		{"body over 64 KiB", "POST", "/api/v1/sessions", big, nil, 400, mc.EINVALID, "body_too_large"},
		{"valid json padded over 64 KiB", "POST", "/api/v1/sessions", bigValid, nil, 400, mc.EINVALID, "body_too_large"},
		{"form content type", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"demo"}`, ct("application/x-www-form-urlencoded"), 400, mc.EINVALID, "bad_content_type"},
		{"text content type", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"demo"}`, ct("text/plain"), 400, mc.EINVALID, "bad_content_type"},
		{"garbled content type", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"demo"}`, ct(";;"), 400, mc.EINVALID, "bad_content_type"},
		{"missing user_id", "POST", "/api/v1/sessions", `{"provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"null user_id", "POST", "/api/v1/sessions", `{"user_id":null,"provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"empty user_id", "POST", "/api/v1/sessions", `{"user_id":"","provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"long user_id", "POST", "/api/v1/sessions", `{"user_id":"` + strings.Repeat("u", 129) + `","provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"user_id with space", "POST", "/api/v1/sessions", `{"user_id":"a b","provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"user_id with slash", "POST", "/api/v1/sessions", `{"user_id":"a/b","provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"missing provider", "POST", "/api/v1/sessions", `{"user_id":"u"}`, nil, 400, mc.EINVALID, "unknown_provider"},
		{"unknown provider", "POST", "/api/v1/sessions", `{"user_id":"u","provider":"nope"}`, nil, 400, mc.EINVALID, "unknown_provider"},
		{"compat unknown field", "POST", "/api/auth/start", `{"user_id":"u","provider":"demo"}`, nil, 400, mc.EINVALID, "unknown_field"},
		{"compat bad user", "POST", "/api/auth/start", `{"userId":"","provider":"demo"}`, nil, 400, mc.EINVALID, "bad_user_id"},
		{"compat unknown provider", "POST", "/api/auth/start", `{"userId":"u","provider":"x"}`, nil, 400, mc.EINVALID, "unknown_provider"},

		{"get id not an id", "GET", "/api/v1/sessions/nope", "", nil, 400, mc.EINVALID, "bad_id"},
		{"get id too long", "GET", "/api/v1/sessions/" + strings.Repeat("A", 23), "", nil, 400, mc.EINVALID, "bad_id"},
		{"get id bad chars", "GET", "/api/v1/sessions/" + strings.Repeat("A", 21) + "%21", "", nil, 400, mc.EINVALID, "bad_id"},
		{"get unknown id", "GET", "/api/v1/sessions/" + mc.NewID(), "", nil, 404, mc.ENOTFOUND, "session_not_found"},
		{"cancel id not an id", "POST", "/api/v1/sessions/x/cancel", "", nil, 400, mc.EINVALID, "bad_id"},
		{"cancel unknown id", "POST", "/api/v1/sessions/" + mc.NewID() + "/cancel", "", nil, 404, mc.ENOTFOUND, "session_not_found"},
		{"cancel ended", "POST", "/api/v1/sessions/" + ended.ID + "/cancel", "", nil, 409, mc.ECONFLICT, "session_ended"},
		{"events id not an id", "GET", "/api/v1/sessions/..%2f..%2fetc/events", "", nil, 400, mc.EINVALID, "bad_id"},
		{"events unknown id", "GET", "/api/v1/sessions/" + mc.NewID() + "/events", "", nil, 404, mc.ENOTFOUND, "session_not_found"},
		{"viewer-token id not an id", "POST", "/api/v1/sessions/x/viewer-token", "", nil, 400, mc.EINVALID, "bad_id"},
		{"viewer-token unknown id", "POST", "/api/v1/sessions/" + mc.NewID() + "/viewer-token", "", nil, 404, mc.ENOTFOUND, "session_not_found"},
		{"viewer-token ended", "POST", "/api/v1/sessions/" + ended.ID + "/viewer-token", "", nil, 409, mc.ECONFLICT, "session_ended"},
		{"compat id not an id", "GET", "/api/auth/session/x", "", nil, 400, mc.EINVALID, "bad_id"},
		{"compat unknown id", "GET", "/api/auth/session/" + mc.NewID(), "", nil, 404, mc.ENOTFOUND, "session_not_found"},

		{"list bad state", "GET", "/api/v1/sessions?state=running", "", nil, 400, mc.EINVALID, "bad_state"},
		{"list bad limit word", "GET", "/api/v1/sessions?limit=ten", "", nil, 400, mc.EINVALID, "bad_limit"},
		{"list zero limit", "GET", "/api/v1/sessions?limit=0", "", nil, 400, mc.EINVALID, "bad_limit"},
		{"list negative limit", "GET", "/api/v1/sessions?limit=-1", "", nil, 400, mc.EINVALID, "bad_limit"},
		{"list huge limit", "GET", "/api/v1/sessions?limit=501", "", nil, 400, mc.EINVALID, "bad_limit"},
		{"list bad cursor", "GET", "/api/v1/sessions?cursor=garbage!", "", nil, 400, mc.EINVALID, "bad_cursor"},
		{"list long cursor", "GET", "/api/v1/sessions?cursor=" + strings.Repeat("c", 513), "", nil, 400, mc.EINVALID, "bad_cursor"},
		{"list bad user", "GET", "/api/v1/sessions?user_id=a%20b", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"list unknown provider", "GET", "/api/v1/sessions?provider=nope", "", nil, 400, mc.EINVALID, "unknown_provider"},

		{"credential bad user", "GET", "/api/v1/credentials/a%20b/demo", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"credential user with escaped slash", "GET", "/api/v1/credentials/a%2Fb/demo", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"credential long user", "GET", "/api/v1/credentials/" + strings.Repeat("u", 129) + "/demo", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"credential unknown provider", "GET", "/api/v1/credentials/alice/nope", "", nil, 400, mc.EINVALID, "unknown_provider"},
		{"credential missing", "GET", "/api/v1/credentials/alice/demo", "", nil, 404, mc.ENOTFOUND, "credential_not_found"},
		{"credential list bad user", "GET", "/api/v1/credentials/%3Cscript%3E", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"credential delete bad user", "DELETE", "/api/v1/credentials/a%20b/demo", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"credential delete unknown provider", "DELETE", "/api/v1/credentials/alice/nope", "", nil, 400, mc.EINVALID, "unknown_provider"},
		{"credential delete missing", "DELETE", "/api/v1/credentials/alice/demo", "", nil, 404, mc.ENOTFOUND, "credential_not_found"},
		{"audit bad user", "GET", "/api/v1/audit?user_id=a%20b", "", nil, 400, mc.EINVALID, "bad_user_id"},
		{"audit bad limit", "GET", "/api/v1/audit?limit=x", "", nil, 400, mc.EINVALID, "bad_limit"},

		{"duplicate key", "POST", "/api/v1/sessions", `{"user_id":"a","provider":"demo","user_id":"b"}`, nil, 400, mc.EINVALID, "duplicate_key"},
		{"keys differing in case", "POST", "/api/v1/sessions", `{"user_id":"a","provider":"demo","USER_ID":"b"}`, nil, 400, mc.EINVALID, "duplicate_key"},
		{"compat keys differing in case", "POST", "/api/auth/start", `{"userId":"a","userid":"b","provider":"demo"}`, nil, 400, mc.EINVALID, "duplicate_key"},
		{"bad query escape", "GET", "/api/v1/sessions?state=%zz", "", nil, 400, mc.EINVALID, "bad_query"},
		{"query with semicolon", "GET", "/api/v1/sessions?limit=1;state=ready", "", nil, 400, mc.EINVALID, "bad_query"},
		{"audit bad query", "GET", "/api/v1/audit?user_id=alice&limit=%", "", nil, 400, mc.EINVALID, "bad_query"},
		{"readyz bad query", "GET", "/readyz?x=%g0", "", nil, 400, mc.EINVALID, "bad_query"},

		{"method not allowed", "DELETE", "/api/v1/sessions/" + live.ID, "", nil, 405, mc.EINVALID, "method_not_allowed"},
		{"method not allowed on list", "PUT", "/api/v1/sessions", "", nil, 405, mc.EINVALID, "method_not_allowed"},
		{"unknown api route", "GET", "/api/v1/nothing", "", nil, 404, mc.ENOTFOUND, "no_route"},
		{"unknown api version", "GET", "/api/v2/sessions", "", nil, 404, mc.ENOTFOUND, "no_route"},
		{"unknown route outside api", "GET", "/whatever", "", nil, 404, mc.ENOTFOUND, "no_route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := e.do(t, tt.method, tt.path, tt.body, tt.hdr...)
			if status != tt.wantStatus {
				t.Errorf("got status %d, want %d (body %s)", status, tt.wantStatus, body)
			}
			if got := hdr.Get("Content-Type"); got != "application/json" {
				t.Errorf("got Content-Type %q, want application/json", got)
			}
			d := decodeError(t, body)
			if d.Code != tt.wantCode || d.Reason != tt.wantReason {
				t.Errorf("got code %q reason %q, want %q %q (message %q)", d.Code, d.Reason, tt.wantCode, tt.wantReason, d.Message)
			}
			if d.Message == "" {
				t.Errorf("got an empty message")
			}
			if status == 405 && hdr.Get("Allow") == "" {
				t.Errorf("got no Allow header on 405")
			}
		})
	}
	// No bad input may have started a session.
	if got := len(e.store.sessions); got != 2 {
		t.Errorf("got %d sessions after bad inputs, want 2", got)
	}
}

func TestAuth(t *testing.T) {
	var vncCalls int
	vnc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vncCalls++
		w.WriteHeader(http.StatusTeapot)
	})
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.VNC = vnc }})
	id := e.newSession(t, "alice", "demo").ID

	tests := []struct {
		name       string
		path       string
		auth       string
		wantStatus int
		wantReason mc.Reason
	}{
		{"missing", "/api/v1/sessions/" + id, "", 401, "missing_api_key"},
		{"empty bearer", "/api/v1/sessions/" + id, "Bearer ", 401, "missing_api_key"},
		{"basic scheme", "/api/v1/sessions/" + id, "Basic " + testAPIKey, 401, "missing_api_key"},
		{"wrong key", "/api/v1/sessions/" + id, "Bearer wrong-key", 401, "bad_api_key"},
		{"key prefix", "/api/v1/sessions/" + id, "Bearer " + testAPIKey[:10], 401, "bad_api_key"},
		{"right key", "/api/v1/sessions/" + id, "Bearer " + testAPIKey, 200, ""},
		{"lower-case scheme", "/api/v1/sessions/" + id, "bearer " + testAPIKey, 200, ""},
		{"second key", "/api/v1/sessions/" + id, "Bearer another-key", 200, ""},
		{"bad id without key is 401 first", "/api/v1/sessions/x", "", 401, "missing_api_key"},
		{"compat needs key", "/api/auth/session/" + id, "", 401, "missing_api_key"},
		{"credentials need key", "/api/v1/credentials/alice/demo", "", 401, "missing_api_key"},
		{"audit needs key", "/api/v1/audit", "", 401, "missing_api_key"},
		{"providers need key", "/api/v1/providers", "", 401, "missing_api_key"},
		{"healthz needs none", "/healthz", "", 200, ""},
		{"readyz needs none", "/readyz", "", 200, ""},
		{"vnc needs none", "/api/v1/sessions/" + id + "/vnc?token=t", "", http.StatusTeapot, ""},
		{"compat vnc needs none", "/api/auth/session/" + id + "/novnc/websock?token=t", "", http.StatusTeapot, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := e.do(t, "GET", tt.path, "", append([]string{"Authorization", tt.auth}, upgrade...)...)
			if status != tt.wantStatus {
				t.Fatalf("got status %d, want %d (body %s)", status, tt.wantStatus, body)
			}
			if status != 401 {
				return
			}
			if got := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("got WWW-Authenticate %q, want Bearer …", got)
			}
			if d := decodeError(t, body); d.Code != mc.EUNAUTHORIZED || d.Reason != tt.wantReason {
				t.Errorf("got code %q reason %q, want unauthorized %q", d.Code, d.Reason, tt.wantReason)
			}
		})
	}
	if vncCalls != 2 {
		t.Errorf("got %d calls of the VNC handler, want 2", vncCalls)
	}
}

func TestCreateSession(t *testing.T) {
	e := newEnv(t, options{})
	status, hdr, body := e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice@example.com","provider":"demo"}`)
	if status != http.StatusCreated {
		t.Fatalf("got status %d, want 201 (body %s)", status, body)
	}
	got := decode[httpapi.CreateSessionResponse](t, body)
	s := got.Session
	if !mc.ValidID(s.ID) || s.UserID != "alice@example.com" || s.Provider != "demo" || s.State != mc.StatePending {
		t.Errorf("got session %+v, want a pending demo session of alice@example.com", s)
	}
	if loc := hdr.Get("Location"); loc != "/api/v1/sessions/"+s.ID {
		t.Errorf("got Location %q", loc)
	}
	wantURL := e.srv.URL + "/sessions/" + s.ID + "/view?token=" + url.QueryEscape(got.Viewer.Token)
	if got.Viewer.URL != wantURL {
		t.Errorf("got viewer url %q, want %q", got.Viewer.URL, wantURL)
	}
	if !strings.HasSuffix(got.Viewer.Token, s.ID) || got.Viewer.ExpiresAt.Before(time.Now().Add(9*time.Minute)) {
		t.Errorf("got viewer %+v, want a token for the session valid for about 10 minutes", got.Viewer)
	}
	if strings.Contains(string(body), "VNCPassword") || strings.Contains(string(body), "secrets") {
		t.Errorf("the response holds the machine secrets: %s", body)
	}

	// JSON with a charset, and no Content-Type at all, are accepted.
	for i, ct := range []string{"application/json; charset=utf-8", ""} {
		body := fmt.Sprintf(`{"user_id":"carol%d","provider":"demo"}`, i)
		if status, _, b := e.do(t, "POST", "/api/v1/sessions", body, "Content-Type", ct); status != http.StatusCreated {
			t.Errorf("Content-Type %q: got %d %s, want 201", ct, status, b)
		}
	}

	// A second start for the same user and provider is a conflict naming the first.
	status, _, body = e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice@example.com","provider":"demo"}`)
	d := decodeError(t, body)
	if status != http.StatusConflict || d.Code != mc.ECONFLICT || d.SessionID != s.ID || d.Reason != "active_session" {
		t.Errorf("got %d %+v, want 409 conflict active_session with session_id %s", status, d, s.ID)
	}

	// Capacity: 503 with Retry-After in whole seconds, rounded up.
	e.sessions.capacity = 1
	status, hdr, body = e.do(t, "POST", "/api/v1/sessions", `{"user_id":"bob","provider":"demo"}`)
	d = decodeError(t, body)
	if status != http.StatusServiceUnavailable || d.Code != mc.EUNAVAILABLE || d.Reason != "capacity" {
		t.Errorf("got %d %+v, want 503 unavailable capacity", status, d)
	}
	if got := hdr.Get("Retry-After"); got != "2" {
		t.Errorf("got Retry-After %q, want 2", got)
	}
}

func TestSessionRoutes(t *testing.T) {
	e := newEnv(t, options{})
	var ids []string
	for i := range 5 {
		ids = append(ids, e.newSession(t, fmt.Sprintf("user%d", i), "demo").ID)
	}
	e.store.setState(ids[0], mc.StateStarting)

	t.Run("get", func(t *testing.T) {
		status, hdr, body := e.do(t, "GET", "/api/v1/sessions/"+ids[0], "")
		got := decode[httpapi.SessionResponse](t, body)
		if status != 200 || got.Session.ID != ids[0] || got.Session.State != mc.StateStarting {
			t.Errorf("got %d %s, want 200 with session %s starting", status, body, ids[0])
		}
		if hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("got Cache-Control %q, want no-store", hdr.Get("Cache-Control"))
		}
	})
	t.Run("list pages", func(t *testing.T) {
		var seen []string
		cursor := ""
		for range 10 {
			status, _, body := e.do(t, "GET", "/api/v1/sessions?limit=2&cursor="+url.QueryEscape(cursor), "")
			if status != 200 {
				t.Fatalf("got status %d (%s)", status, body)
			}
			page := decode[httpapi.SessionsResponse](t, body)
			for _, s := range page.Sessions {
				seen = append(seen, s.ID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if len(seen) != 5 {
			t.Errorf("got %d sessions over all pages, want 5", len(seen))
		}
	})
	t.Run("list filters", func(t *testing.T) {
		tests := []struct {
			query string
			want  int
		}{
			{"user_id=user3", 1},
			{"state=starting", 1},
			{"state=pending&provider=demo", 4},
			{"state=active", 5},
			{"state=completed", 0},
			{"provider=codex", 0},
		}
		for _, tt := range tests {
			status, _, body := e.do(t, "GET", "/api/v1/sessions?"+tt.query, "")
			page := decode[httpapi.SessionsResponse](t, body)
			if status != 200 || len(page.Sessions) != tt.want || page.Sessions == nil {
				t.Errorf("%s: got %d with %d sessions, want 200 with %d (body %s)", tt.query, status, len(page.Sessions), tt.want, body)
			}
		}
	})
	t.Run("events", func(t *testing.T) {
		status, _, body := e.do(t, "GET", "/api/v1/sessions/"+ids[0]+"/events", "")
		got := decode[httpapi.EventsResponse](t, body)
		if status != 200 || len(got.Events) != 2 || got.Events[1].State != mc.StateStarting {
			t.Errorf("got %d %s, want 2 events ending in starting", status, body)
		}
	})
	t.Run("viewer token", func(t *testing.T) {
		status, _, body := e.do(t, "POST", "/api/v1/sessions/"+ids[1]+"/viewer-token", "")
		v := decode[httpapi.Viewer](t, body)
		if status != 200 || !strings.HasSuffix(v.Token, ids[1]) || !strings.Contains(v.URL, "/sessions/"+ids[1]+"/view?token=") {
			t.Errorf("got %d %s, want a viewer for %s", status, body, ids[1])
		}
	})
	t.Run("cancel", func(t *testing.T) {
		status, _, body := e.do(t, "POST", "/api/v1/sessions/"+ids[2]+"/cancel", "")
		got := decode[httpapi.SessionResponse](t, body)
		if status != 200 || got.Session.State != mc.StateCancelled {
			t.Errorf("got %d %s, want 200 cancelled", status, body)
		}
		status, _, body = e.do(t, "POST", "/api/v1/sessions/"+ids[2]+"/cancel", "")
		if d := decodeError(t, body); status != 409 || d.Reason != "session_ended" || d.SessionID != ids[2] {
			t.Errorf("cancel again: got %d %+v, want 409 session_ended", status, d)
		}
	})
	t.Run("providers", func(t *testing.T) {
		status, _, body := e.do(t, "GET", "/api/v1/providers", "")
		got := decode[httpapi.ProvidersResponse](t, body)
		if status != 200 || len(got.Providers) != 2 || got.Providers[0].Name != "demo" {
			t.Errorf("got %d %s, want the two providers", status, body)
		}
		// Durations are strings across the API, never nanoseconds.
		if !strings.Contains(string(body), `"login_timeout":"15m"`) {
			t.Errorf("got %s, want login_timeout \"15m\"", body)
		}
	})
}

func TestCompat(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *httpapi.Config) { c.PublicURL = "https://mc.example.com/base/" }})
	status, _, body := e.do(t, "POST", "/api/auth/start", `{"userId":"alice","provider":"demo"}`)
	if status != 200 {
		t.Fatalf("got status %d, want 200 (%s)", status, body)
	}
	got := decode[httpapi.CompatStartResponse](t, body)
	if !mc.ValidID(got.SessionID) || got.Status != "pending" || got.Token == "" {
		t.Errorf("got %+v, want a pending session and a token", got)
	}
	q := url.QueryEscape(got.Token)
	if want := "https://mc.example.com/base/sessions/" + got.SessionID + "/view?token=" + q; got.ViewerURL != want {
		t.Errorf("got viewerUrl %q, want %q", got.ViewerURL, want)
	}
	if want := "wss://mc.example.com/base/api/auth/session/" + got.SessionID + "/novnc/websock?token=" + q; got.WebSocketURL != want {
		t.Errorf("got websocketUrl %q, want %q", got.WebSocketURL, want)
	}

	// The same code path: a second start conflicts with the first.
	status, _, body = e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice","provider":"demo"}`)
	if d := decodeError(t, body); status != 409 || d.SessionID != got.SessionID {
		t.Errorf("got %d %+v, want 409 naming %s", status, d, got.SessionID)
	}

	status, _, body = e.do(t, "GET", "/api/auth/session/"+got.SessionID, "")
	s := decode[httpapi.CompatSessionResponse](t, body)
	if status != 200 || s.SessionID != got.SessionID || s.Status != "pending" || s.UserID != "alice" ||
		s.Provider != "demo" || !strings.HasPrefix(s.ViewerURL, "https://mc.example.com/base/sessions/") {
		t.Errorf("got %d %+v", status, s)
	}
	e.store.setState(got.SessionID, mc.StateCompleted)
	_, _, body = e.do(t, "GET", "/api/auth/session/"+got.SessionID, "")
	if s := decode[httpapi.CompatSessionResponse](t, body); s.Status != "completed" || s.ViewerURL != "" {
		t.Errorf("got %+v, want completed without viewerUrl", s)
	}
}

func TestCredentials(t *testing.T) {
	e := newEnv(t, options{})
	at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	e.vault.creds[[2]string{"alice", "demo"}] = mc.Credential{UserID: "alice", Provider: "demo", SessionID: "s1",
		CapturedAt: at, Files: map[string]string{"~/.demo/credentials.json": `{"access_token":"demo-PLAINTEXT"}`}}
	actor := httpapi.HashAPIKey(testAPIKey).ID()

	status, _, body := e.do(t, "GET", "/api/v1/credentials/alice/demo", "")
	c := decode[mc.Credential](t, body)
	if status != 200 || c.Files["~/.demo/credentials.json"] != `{"access_token":"demo-PLAINTEXT"}` {
		t.Errorf("got %d %s, want the opened credential", status, body)
	}

	status, _, body = e.do(t, "GET", "/api/v1/credentials/alice", "")
	list := decode[httpapi.CredentialsResponse](t, body)
	want := httpapi.CredentialsResponse{UserID: "alice", Credentials: []httpapi.CredentialInfo{{Provider: "demo", CapturedAt: at, SessionID: "s1"}}}
	if status != 200 || fmt.Sprint(list) != fmt.Sprint(want) {
		t.Errorf("got %d %+v, want %+v", status, list, want)
	}
	for _, secret := range []string{"PLAINTEXT", "CIPHERTEXT", "nonce", "key_id"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("the list shows %q: %s", secret, body)
		}
	}

	status, _, body = e.do(t, "DELETE", "/api/v1/credentials/alice/demo", "")
	if status != http.StatusNoContent || len(body) != 0 {
		t.Errorf("got %d %q, want 204 and no body", status, body)
	}
	if status, _, _ := e.do(t, "GET", "/api/v1/credentials/alice/demo", ""); status != 404 {
		t.Errorf("after delete: got %d, want 404", status)
	}

	status, _, body = e.do(t, "GET", "/api/v1/audit?user_id=alice&limit=10", "")
	audit := decode[httpapi.AuditResponse](t, body)
	var actions []string
	for _, a := range audit.Entries {
		if a.Actor != actor {
			t.Errorf("got actor %q, want %q", a.Actor, actor)
		}
		actions = append(actions, a.Action+":"+a.Outcome)
	}
	if got, want := strings.Join(actions, ","), "read:not_found,delete:ok,list:ok,read:ok"; status != 200 || got != want {
		t.Errorf("got %d audit %s, want %s", status, got, want)
	}
	if !strings.HasPrefix(actor, "key:") || len(actor) != 12 {
		t.Errorf("got actor %q, want key: and 8 hex digits", actor)
	}

	t.Run("no vault", func(t *testing.T) {
		e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Credentials = nil }})
		for _, p := range []string{"/api/v1/credentials/alice/demo", "/api/v1/credentials/alice"} {
			status, _, body := e.do(t, "GET", p, "")
			if d := decodeError(t, body); status != 503 || d.Reason != "no_vault" {
				t.Errorf("%s: got %d %+v, want 503 no_vault", p, status, d)
			}
		}
	})
}

func TestInternalErrorDoesNotLeak(t *testing.T) {
	e := newEnv(t, options{})
	e.store.failWith = fmt.Errorf("query sessions: %w", errDisk)
	for _, p := range []string{"/api/v1/sessions/" + mc.NewID(), "/api/v1/sessions"} {
		status, _, body := e.do(t, "GET", p, "")
		d := decodeError(t, body)
		if status != 500 || d.Code != mc.EINTERNAL || d.Message != "internal error" || d.Reason != "" {
			t.Errorf("%s: got %d %+v, want 500 internal error", p, status, d)
		}
		if strings.Contains(string(body), "SECRETCAUSE") || strings.Contains(string(body), "/var/lib") {
			t.Errorf("%s: the cause leaked: %s", p, body)
		}
	}
	// The cause is in the log, on the request's one line, at error level.
	logs := e.logs.String()
	if !strings.Contains(logs, "SECRETCAUSE") || !strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("the cause is not in the log: %s", logs)
	}
}

func TestPanicRecovery(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom in web") })
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Web = web }})
	status, _, body := e.do(t, "GET", "/", "")
	if d := decodeError(t, body); status != 500 || d.Code != mc.EINTERNAL || d.Message != "internal error" {
		t.Errorf("got %d %+v, want 500 internal", status, d)
	}
	lines := logLines(t, e.logs.String())
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1: %v", len(lines), lines)
	}
	l := lines[0]
	if l["reason"] != "panic" || l["level"] != "ERROR" || !strings.Contains(fmt.Sprint(l["error"]), "boom in web") ||
		!strings.Contains(fmt.Sprint(l["stack"]), "api_test.go") {
		t.Errorf("got log line %v, want reason panic with the value and the stack", l)
	}
	// The server is still serving.
	if status, _, _ := e.do(t, "GET", "/healthz", ""); status != 200 {
		t.Errorf("after a panic: got %d, want 200", status)
	}

	t.Run("after the header", func(t *testing.T) {
		web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("partial"))
			panic("boom late")
		})
		e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Web = web }})
		// The header may or may not have left the buffer: either the response
		// or its body ends in an error, never in a whole-looking response.
		resp, err := e.srv.Client().Get(e.srv.URL + "/")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Errorf("got a whole response, want the connection aborted")
		}
		e.logs.waitLines(t, 1)
		if l := logLines(t, e.logs.String())[0]; l["reason"] != "panic" || l["status"] != float64(200) {
			t.Errorf("got log line %v, want reason panic, status 200", l)
		}
	})
}

func TestRequestID(t *testing.T) {
	var seen string
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.Logger(r.Context()).Info("from a handler")
		seen = "called"
	})
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Web = web }})
	tests := []struct {
		name, in string
		keep     bool
	}{
		{"sane", "req-123.abc:9", true},
		{"none", "", false},
		{"too long", strings.Repeat("r", 65), false},
		{"bad chars", "a b<script>", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, hdr, _ := e.do(t, "GET", "/healthz", "", "X-Request-ID", tt.in)
			got := hdr.Get("X-Request-ID")
			if tt.keep && got != tt.in {
				t.Errorf("got %q, want %q echoed", got, tt.in)
			}
			if !tt.keep && (got == tt.in || !mc.ValidID(got)) {
				t.Errorf("got %q, want a new id", got)
			}
			if hdr.Get("X-MC-Replica") != "r1" {
				t.Errorf("got X-MC-Replica %q, want r1", hdr.Get("X-MC-Replica"))
			}
		})
	}
	before := len(logLines(t, e.logs.String()))
	e.do(t, "GET", "/", "", "X-Request-ID", "rid-for-logger")
	if seen != "called" {
		t.Fatal("the web handler was not called")
	}
	lines := logLines(t, e.logs.String())[before:]
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %v", len(lines), lines)
	}
	for _, l := range lines {
		if l["request_id"] != "rid-for-logger" || l["replica"] != "r1" {
			t.Errorf("got line %v, want request_id rid-for-logger and replica r1", l)
		}
	}
}

// TestReadyz checks readiness: the status for everyone, what is wrong only
// for a caller with the API key (it may name the database's user and host).
func TestReadyz(t *testing.T) {
	var driverErr error
	e := newEnv(t, options{deps: func(d *httpapi.Deps) {
		d.Checks = []httpapi.Check{{Name: "driver", Check: func(context.Context) error { return driverErr }}}
	}})
	check := func(wantStatus int, want httpapi.HealthResponse) {
		t.Helper()
		for _, auth := range []string{"", "Bearer wrong-key", "Bearer " + testAPIKey} {
			status, _, body := e.do(t, "GET", "/readyz", "", "Authorization", auth)
			got := decode[httpapi.HealthResponse](t, body)
			w := want
			if auth != "Bearer "+testAPIKey {
				w.Checks = nil
			}
			if status != wantStatus || fmt.Sprint(got) != fmt.Sprint(w) {
				t.Errorf("%q: got %d %+v, want %d %+v", auth, status, got, wantStatus, w)
			}
		}
	}
	check(200, httpapi.HealthResponse{Status: "ok", Checks: map[string]string{"store": "ok", "driver": "ok"}})
	driverErr = fmt.Errorf("Xvnc not found (apt-get install tigervnc-standalone-server)")
	e.store.pingErr = fmt.Errorf("dial postgres://mc@db.internal:5432/mc: connection refused")
	check(503, httpapi.HealthResponse{Status: "unavailable", Checks: map[string]string{
		"store": e.store.pingErr.Error(), "driver": driverErr.Error()}})
	driverErr, e.store.pingErr = nil, nil
	e.api.Drain()
	check(503, httpapi.HealthResponse{Status: "draining", Checks: map[string]string{"store": "ok", "driver": "ok"}})
	// /healthz stays 200.
	if status, _, body := e.do(t, "GET", "/healthz", ""); status != 200 || string(body) != "{\"status\":\"ok\"}\n" {
		t.Errorf("healthz: got %d %s", status, body)
	}
}

func TestMaskIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.200.0.17", "10.200.0.x"},
		{"127.0.0.1", "127.0.0.x"},
		{"::ffff:192.168.1.9", "192.168.1.x"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1::x"},
		{"fe80::1%eth0", "fe80::x"},
		{"::1", "::x"},
	}
	for _, tt := range tests {
		if got := httpapi.MaskIP(netip.MustParseAddr(tt.in)); got != tt.want {
			t.Errorf("MaskIP(%s): got %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := httpapi.MaskIP(netip.Addr{}); got != "" {
		t.Errorf("MaskIP(invalid): got %q, want empty", got)
	}
}

func TestMounts(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handler", "web")
		w.WriteHeader(http.StatusOK)
	})
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handler", "metrics")
	})
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Web, d.Metrics = web, metrics }})
	id := mc.NewID()
	tests := []struct {
		path        string
		wantStatus  int
		wantHandler string
	}{
		{"/", 200, "web"},
		{"/sessions/" + id + "/view?token=abc", 200, "web"},
		{"/static/app.js", 200, "web"},
		{"/novnc/core/rfb.js", 200, "web"},
		{"/metrics", 401, ""},
		{"/index.html", 404, ""},
	}
	for _, tt := range tests {
		status, hdr, body := e.do(t, "GET", tt.path, "", "Authorization", "")
		if status != tt.wantStatus || hdr.Get("X-Handler") != tt.wantHandler {
			t.Errorf("%s: got %d from %q (%s), want %d from %q", tt.path, status, hdr.Get("X-Handler"), body, tt.wantStatus, tt.wantHandler)
		}
	}
	// /metrics needs the API key.
	if status, hdr, body := e.do(t, "GET", "/metrics", ""); status != 200 || hdr.Get("X-Handler") != "metrics" {
		t.Errorf("/metrics with the key: got %d from %q (%s), want 200 from metrics", status, hdr.Get("X-Handler"), body)
	}
	// MetricsOnly serves /metrics alone, for a listener of its own.
	only := httptest.NewServer(httpapi.MetricsOnly(metrics))
	defer only.Close()
	for _, tt := range []struct {
		method, path string
		want         int
	}{{"GET", "/metrics", 200}, {"GET", "/", 404}, {"GET", "/api/v1/sessions", 404}, {"POST", "/metrics", 405}} {
		req, _ := http.NewRequestWithContext(t.Context(), tt.method, only.URL+tt.path, nil)
		resp, err := only.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("metrics only %s %s: got %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
		if tt.want != 200 {
			decodeError(t, b)
		}
	}
	// A non-canonical path is redirected, as the mux does, not turned into
	// a 404; the answer is JSON like every other.
	for _, tt := range []struct {
		method, path, wantLoc string
		wantStatus            int
	}{
		{"GET", "/static", "/static/", 307},
		{"GET", "/api/v1//sessions", "/api/v1/sessions", 307},
		{"POST", "/api/v1/sessions/../sessions", "/api/v1/sessions", 307},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tt.method, e.srv.URL+tt.path, nil)
		req.URL.Opaque = tt.path // as written, not cleaned by the client
		resp, err := e.srv.Client().Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus || resp.Header.Get("Location") != tt.wantLoc ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: got %d to %q (%s), want a JSON %d to %q", tt.method, tt.path, resp.StatusCode,
				resp.Header.Get("Location"), resp.Header.Get("Content-Type"), tt.wantStatus, tt.wantLoc)
		}
		if d := decodeError(t, b); d.Code != mc.ENOTFOUND || d.Reason != httpapi.ReasonRedirect {
			t.Errorf("%s %s: got %+v, want not_found redirect", tt.method, tt.path, d)
		}
	}

	// A plain request on a viewer route is 426 with Upgrade: websocket.
	ve := newEnv(t, options{deps: func(d *httpapi.Deps) {
		d.VNC = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	}})
	for _, p := range []string{"/api/v1/sessions/" + id + "/vnc?token=t", "/api/auth/session/" + id + "/novnc/websock?token=t"} {
		status, hdr, body := ve.do(t, "GET", p, "", "Authorization", "")
		if d := decodeError(t, body); status != http.StatusUpgradeRequired || hdr.Get("Upgrade") != "websocket" ||
			d.Code != mc.EINVALID || d.Reason != httpapi.ReasonUpgradeRequired {
			t.Errorf("%s: got %d %v %s, want 426 upgrade_required with Upgrade: websocket", p, status, hdr, body)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	store := newFakeStore()
	full := httpapi.Deps{Sessions: &fakeSessions{store: store}, Store: store, Tokens: &fakeTokens{}, Providers: testProviders}
	keys := []httpapi.KeyHash{httpapi.HashAPIKey(testAPIKey)}
	var cfg httpapi.Config
	tests := []struct {
		name string
		edit func(*httpapi.Deps)
	}{
		{"no sessions", func(d *httpapi.Deps) { d.Sessions = nil }},
		{"no store", func(d *httpapi.Deps) { d.Store = nil }},
		{"no tokens", func(d *httpapi.Deps) { d.Tokens = nil }},
		{"no providers", func(d *httpapi.Deps) { d.Providers = nil }},
		{"no API key", func(d *httpapi.Deps) { cfg.APIKeys = nil }},
		{"check without function", func(d *httpapi.Deps) { d.Checks = []httpapi.Check{{Name: "driver"}} }},
		{"check named store", func(d *httpapi.Deps) {
			d.Checks = []httpapi.Check{{Name: "store", Check: func(context.Context) error { return nil }}}
		}},
	}
	for _, tt := range tests {
		d := full
		cfg = httpapi.Config{APIKeys: keys}
		tt.edit(&d)
		if _, err := httpapi.New(cfg, d, nil, nil); err == nil {
			t.Errorf("%s: got no error", tt.name)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := httpapi.New(httpapi.Config{APIKeys: keys}, full, nil, reg); err != nil {
		t.Fatalf("first: %v", err)
	}
	if _, err := httpapi.New(httpapi.Config{APIKeys: keys}, full, nil, reg); err == nil {
		t.Errorf("second on one registry: got no error, want the metrics conflict")
	}
}

// TestProviderUnavailable: a provider whose CLI is missing is listed as
// unavailable and refused at once, not minutes later in its machine.
func TestProviderUnavailable(t *testing.T) {
	e := newEnv(t, options{deps: func(d *httpapi.Deps) {
		d.ProviderCheck = func(p mc.Provider) error {
			if p.Name == "codex" {
				return errors.New("provider CLI codex is missing from /opt/x: run scripts/deps.sh")
			}
			return nil
		}
	}})
	status, _, body := e.do(t, "GET", "/api/v1/providers", "")
	got := decode[httpapi.ProvidersResponse](t, body)
	if status != 200 || len(got.Providers) != 2 {
		t.Fatalf("got %d %s", status, body)
	}
	for _, p := range got.Providers {
		if want := p.Name != "codex"; p.Available != want || (p.Unavailable != "") == want {
			t.Errorf("provider %s: available %v (%q), want %v", p.Name, p.Available, p.Unavailable, want)
		}
	}
	status, _, body = e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice","provider":"codex"}`)
	if d := decodeError(t, body); status != 503 || d.Reason != "provider_unavailable" || !strings.Contains(d.Message, "scripts/deps.sh") {
		t.Errorf("start codex: got %d %+v, want 503 provider_unavailable saying how to install it", status, d)
	}
	if status, _, body = e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice","provider":"demo"}`); status != 201 {
		t.Errorf("start demo: got %d %s, want 201", status, body)
	}
}

// TestForeignErrors checks that the error answers of the handlers the API
// mounts (pages, gateway) are JSON with a code like the API's own, while
// their other answers pass as they are.
func TestForeignErrors(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/static/missing.js":
			http.NotFound(w, r)
		case "/static/broken.js":
			http.Error(w, "internal error: /srv/secret/path", http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = w.Write([]byte("ok();"))
		}
	})
	vnc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "unsupported WebSocket version", http.StatusBadRequest)
	})
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Web, d.VNC = web, vnc }})
	tests := []struct {
		path       string
		hdr        []string
		wantStatus int
		wantCode   mc.Code
		wantReason mc.Reason
	}{
		{"/static/missing.js", nil, 404, mc.ENOTFOUND, "no_route"},
		{"/static/broken.js", nil, 500, mc.EINTERNAL, ""},
		{"/api/v1/sessions/" + mc.NewID() + "/vnc?token=t", upgrade, 400, mc.EINVALID, "bad_request"},
	}
	for _, tt := range tests {
		status, hdr, body := e.do(t, "GET", tt.path, "", tt.hdr...)
		d := decodeError(t, body)
		if status != tt.wantStatus || hdr.Get("Content-Type") != "application/json" || d.Code != tt.wantCode || d.Reason != tt.wantReason {
			t.Errorf("%s: got %d %s %s, want %d %s %s", tt.path, status, hdr.Get("Content-Type"), body, tt.wantStatus, tt.wantCode, tt.wantReason)
		}
		if strings.Contains(string(body), "secret") {
			t.Errorf("%s: the handler's own text leaked: %s", tt.path, body)
		}
	}
	status, hdr, body := e.do(t, "GET", "/static/app.js", "")
	if status != 200 || hdr.Get("Content-Type") != "text/javascript" || string(body) != "ok();" {
		t.Errorf("a page's own answer: got %d %s %q", status, hdr.Get("Content-Type"), body)
	}
	if !strings.Contains(e.logs.String(), `"reason":"no_route"`) {
		t.Errorf("the access log holds no reason for the page's 404: %s", e.logs.String())
	}
}
