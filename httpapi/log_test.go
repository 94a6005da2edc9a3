package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
	"github.com/master-controller/mc/internal/jsonkey"
)

// logLines parses JSON log output into one map per line. A line that holds
// a key twice (the replica once from the caller's logger and once more from
// the API's) fails the test: a JSON reader would keep only one of them.
func logLines(tb testing.TB, s string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for line := range strings.Lines(s) {
		if k, dup := jsonkey.Duplicate([]byte(line)); dup {
			tb.Errorf("log line holds key %q twice: %s", k, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAccessLog checks the one line per request: its fields, the route
// pattern rather than the path, the reason of a refusal, and that neither the
// API key nor any viewer token nor a query string ever reaches the log.
func TestAccessLog(t *testing.T) {
	vnc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.VNC = vnc }})

	_, _, body := e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice","provider":"demo"}`)
	var created httpapi.CreateSessionResponse
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	id := created.Session.ID
	e.do(t, "POST", "/api/v1/sessions/"+id+"/viewer-token", "")
	e.do(t, "POST", "/api/auth/start", `{"userId":"bob","provider":"demo"}`)
	e.do(t, "GET", "/api/auth/session/"+id, "")
	e.do(t, "GET", "/api/v1/sessions/"+id+"/vnc?token="+created.Viewer.Token, "", append([]string{"Authorization", ""}, upgrade...)...)
	e.do(t, "GET", "/api/v1/sessions/"+id, "", "Authorization", "Bearer "+testAPIKey+"x")
	e.do(t, "GET", "/api/v1/sessions?cursor=SECRETCURSOR", "")
	e.do(t, "GET", "/sessions/"+id+"/view?token="+created.Viewer.Token, "")

	logs := e.logs.String()
	secrets := append([]string{testAPIKey, "SECRETCURSOR", "token="}, e.tokens.issued...)
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds %q:\n%s", s, logs)
		}
	}
	if len(e.tokens.issued) < 3 {
		t.Errorf("got %d tokens issued, want at least 3", len(e.tokens.issued))
	}

	lines := logLines(t, logs)
	if len(lines) != 8 {
		t.Fatalf("got %d log lines, want one per request (8):\n%s", len(lines), logs)
	}
	want := []struct {
		route   string
		status  float64
		reason  string
		session string
	}{
		{"POST /api/v1/sessions", 201, "", id},
		{"POST /api/v1/sessions/{id}/viewer-token", 200, "", id},
		{"POST /api/auth/start", 200, "", ""},
		{"GET /api/auth/session/{id}", 200, "", id},
		{"GET /api/v1/sessions/{id}/vnc", 204, "", id},
		{"GET /api/v1/sessions/{id}", 401, "bad_api_key", id},
		{"GET /api/v1/sessions", 400, "bad_cursor", ""},
		{"unmatched", 404, "no_route", ""},
	}
	for i, w := range want {
		l := lines[i]
		if l["msg"] != "http request" || l["route"] != w.route || l["status"] != w.status ||
			l["remote"] != "127.0.0.x" || l["request_id"] == nil || l["duration"] == nil || l["bytes"] == nil {
			t.Errorf("line %d: got %v, want route %q status %v, masked remote", i, l, w.route, w.status)
		}
		if got, _ := l["reason"].(string); got != w.reason {
			t.Errorf("line %d: got reason %q, want %q", i, got, w.reason)
		}
		if got, _ := l["session_id"].(string); w.session != "" && got != w.session {
			t.Errorf("line %d: got session_id %q, want %q", i, got, w.session)
		}
	}
	if got := lines[1]["actor"]; got != httpapi.HashAPIKey(testAPIKey).ID() {
		t.Errorf("got actor %v, want the key's id", got)
	}

	// The metrics count by route pattern and status code.
	if got := e.metric(t, "mc_http_requests_total", "route", "GET /api/v1/sessions/{id}", "code", "401"); got != 1 {
		t.Errorf("got %v requests counted for 401 on GET /api/v1/sessions/{id}, want 1", got)
	}
	if got := e.metric(t, "mc_http_errors_total", "route", "GET /api/v1/sessions", "reason", "bad_cursor"); got != 1 {
		t.Errorf("got %v errors counted for bad_cursor, want 1", got)
	}
	if n, err := testutil.GatherAndCount(e.reg, "mc_http_request_seconds"); err != nil || n == 0 {
		t.Errorf("got %d histogram series (%v), want some", n, err)
	}
}

// metric returns the value of the counter name with the given label pairs,
// gathered from the registry (0 when it has no such series).
func (e *env) metric(tb testing.TB, name string, labelPairs ...string) float64 {
	tb.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if labels[labelPairs[i]] != labelPairs[i+1] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestWebSocketThrough checks that the middleware passes Hijack through to
// the gateway's handler: a real WebSocket over the API server.
func TestWebSocketThrough(t *testing.T) {
	vnc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		_ = c.Write(r.Context(), typ, b)
		c.Close(4410, "the session has ended")
	})
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.VNC = vnc }})
	id := mc.NewID()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/api/v1/sessions/" + id + "/vnc?token=abc"
	c, _, err := websocket.Dial(t.Context(), url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(t.Context(), websocket.MessageBinary, []byte("RFB 003.008\n")); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.Read(t.Context())
	if err != nil || string(b) != "RFB 003.008\n" {
		t.Fatalf("got %q %v, want the echo", b, err)
	}
	_, _, err = c.Read(t.Context())
	if got := websocket.CloseStatus(err); got != 4410 {
		t.Errorf("got close status %d, want 4410", got)
	}
	// The access line is written when the handler returns.
	e.logs.waitLines(t, 1)
	lines := logLines(t, e.logs.String())
	if len(lines) != 1 || lines[0]["status"] != float64(101) || lines[0]["route"] != "GET /api/v1/sessions/{id}/vnc" {
		t.Errorf("got %v, want one line with status 101", lines)
	}
}
